"""The error every part of the server raises when it cannot start."""


class StartupError(Exception):
    """The server could not start (a port taken, workers that cannot load the model...); ``str()`` says why."""
