"""The host side of the wire protocol: COBS/CRC framing, message building and parsing,
the HMAC tags, and frame inspection for `ibt frame`. Imports nothing of the host above it."""
