"""Thin HTTP routes: parse, authorize, call one service, shape the answer."""
