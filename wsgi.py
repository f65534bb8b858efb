from webapp import app_from_environment

app = app_from_environment()
