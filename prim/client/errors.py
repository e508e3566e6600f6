"""The error raised by the clients."""


class ApiError(Exception):
    """A reply with a code other than 200."""

    def __init__(self, code: int, msg: str, status: int | None = None, data=None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.data = data
