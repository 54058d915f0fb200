"""Content filters: spam scoring, virus scanning, attachment rules."""
