"""Products.ZEOClient: ZEO client support for Zope 6 clusters."""


def initialize(context):
    """Zope product initialisation: the product registers no classes yet."""
