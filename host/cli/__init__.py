"""The `ibt` command line: thin click wrappers, one module per command group."""
