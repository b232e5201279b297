"""Hypothesis strategies for request headers an attacker chooses (shared by the API fuzz tests).

Names mix the ones the apps read (authorization, forwarding, origin, content type) with random
tokens; values are any visible ASCII, long ones included. CR/LF never appear: an HTTP client
cannot send them inside a value, and the transport fuzz covers raw bytes.
"""

from __future__ import annotations

import string

from hypothesis import strategies as st

KNOWN = [
    "authorization",
    "content-type",
    "accept",
    "accept-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
    "origin",
    "referer",
    "cookie",
    "user-agent",
    "range",
    "if-none-match",
    "sec-fetch-site",
]
TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
VALUE = "".join(chr(c) for c in range(0x20, 0x7F)) + "\t"

NAMES = st.one_of(st.sampled_from(KNOWN), st.text(TOKEN, min_size=1, max_size=40))
VALUES = st.one_of(
    st.sampled_from(["Bearer ", "Bearer", "Basic YTpi", "bearer x y", "*", "null", "127.0.0.1"]),
    st.text(VALUE, max_size=64).map(str.strip),
    st.text(VALUE, min_size=1000, max_size=4000).map(str.strip),
)
HEADERS = st.dictionaries(NAMES, VALUES, max_size=6)
