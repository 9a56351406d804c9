"""Keep database passwords given on the command line out of `ps`.

`ps` and /proc/<pid>/cmdline show a process's arguments to every local user for as
long as it runs (a catch-up run can take a while). setproctitle rewrites the memory
they are read from; the short window between exec and this call stays, which is
why the docs steer passwords to the environment or a chmod 600 config file.
"""

from __future__ import annotations

import re

import setproctitle

# Greedy up to the last '@' of the argument: a password holding an unescaped '@'
# is masked whole, at worst with part of the host.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^\s]*@", re.IGNORECASE)


def masked(title: str) -> str:
    """The command line with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>***@", title)


def hide_passwords() -> bool:
    """Rewrite the process title if the command line holds a URL password; True if so."""
    title = setproctitle.getproctitle()
    safe = masked(title)
    if safe == title:
        return False
    setproctitle.setproctitle(safe)
    return True
