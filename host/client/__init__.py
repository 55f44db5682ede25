"""The typed tap client: one request, its reply checked and typed, signed commands with
the tap's key and counter, safe retries, and discovery of new taps by scan."""
