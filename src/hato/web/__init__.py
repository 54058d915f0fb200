"""Webmail, admin and JSON API over the store interfaces."""
