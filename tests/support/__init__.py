"""Shared test machinery: live servers on free ports, and SSE readers with timeouts."""
