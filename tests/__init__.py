# End-to-end tests of the whole bundle; see harness.py.
