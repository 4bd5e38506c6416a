"""Small worker programs that ship with the service (used by the example assets and the tests)."""
