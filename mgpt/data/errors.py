"""The one error the data layer raises for bad input."""


class DataError(ValueError):
    """A data file is missing, empty or malformed; the message names the file and line."""
