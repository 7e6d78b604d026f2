"""The one generic spider (:mod:`crawlers.spiders.platform`)."""
