"""Plain validated data and the interfaces between layers: the site model and its file,
board descriptions, the `Fleet` protocol, the source adapter protocol, scheduled jobs.
Imports nothing of the host but itself."""
