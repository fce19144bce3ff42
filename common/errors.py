"""The project's user-error family: conditions a user can fix, reported as one line, never a traceback.

Every message reads ``"<file or option>: <what is wrong, how to fix it>"``; ``common.cli.run`` prints it as
``error: <message>`` on stderr and exits with status 2. Library code raises these for bad input (files,
folders, option values and combinations); programming errors stay ordinary exceptions.

* :class:`UserError` – the base class (a ``ValueError``, so older ``except ValueError`` code still works).
* :class:`OptionError` – a bad command-line option or combination of options.
* ``common.data.io.DataLayoutError`` / ``ImageReadError`` – dataset layout and unreadable files.
"""


class UserError(ValueError):
    """A condition the user can fix; the message names the file or option and says what to do."""


class OptionError(UserError):
    """A bad option value or an incompatible combination of options (message starts with the option)."""
