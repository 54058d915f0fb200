"""The HTTP service (autoconfig, autodiscover, MTA-STS policy, metrics, health) and, later,
webmail, admin and JSON API, over the store interfaces."""
