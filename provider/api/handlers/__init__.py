"""HTTP handlers: parse, call one service, shape the answer."""
