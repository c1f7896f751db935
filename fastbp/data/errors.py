"""The one error every data reader raises."""


class DataError(ValueError):
    """Input data that cannot be used, with a message fit for one line."""


def quoted(names):
    return ", ".join(repr(name) for name in names)
