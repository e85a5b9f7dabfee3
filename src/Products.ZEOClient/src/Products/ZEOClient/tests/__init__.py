"""Unit tests of Products.ZEOClient (fakes allowed; the end-to-end tests
of the bundle are in the checkout's tests/ folder)."""


def assert_fails_loudly_without(test, owner, name, check, words):
    """*check()* raises RuntimeError saying *words* while ZEO's *owner*
    lacks attribute *name* (removed for the test, then put back)."""
    saved = owner.__dict__[name]
    delattr(owner, name)
    try:
        with test.assertRaises(RuntimeError) as raised:
            check()
    finally:
        setattr(owner, name, saved)
    test.assertIn(words, str(raised.exception))
