"""Roombridge core: the domain and integration code shared by webapp/, webhooks/ and jobs/."""
