"""The `pcloud` command line over the local API."""
