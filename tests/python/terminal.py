"""Runs a command on a pseudo-terminal, as a person at a terminal would (standard library
only): waits for each expected text in its output, then types the matching line.

Usage: terminal.py '<json list of [expect, type] or [expect, type, "noecho"]>' <command> [args...]
With "noecho" the line is typed once the program has switched the terminal's echo off (a
password prompt), not before. A `type` of "\\u0004" (Ctrl-D) ends the input. Prints
everything the terminal showed (the typed text only where the program echoed it), then exits
with the command's status.
"""

import json
import os
import pty
import select
import sys
import termios
import time

BOUND = 120  # seconds for each expected text: generous, the machine may be busy

steps = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])

shown = b""


def read_some(timeout):
    global shown
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return True
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # the child closed the terminal
        return False
    if not chunk:
        return False
    shown += chunk
    return True


seen_from = 0  # each expected text is looked for in what came after the last one
for expect, typed, *flags in steps:
    deadline = time.monotonic() + BOUND
    while expect.encode() not in shown[seen_from:]:
        if time.monotonic() > deadline or not read_some(0.2):
            sys.stdout.write(shown.decode(errors="replace"))
            sys.exit(f"terminal.py: never saw {expect!r}")
    # The master side reads the terminal's settings: wait for the program to turn echo off.
    while "noecho" in flags and termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.monotonic() > deadline:
            sys.exit(f"terminal.py: echo still on after {expect!r}")
        read_some(0.05)
    seen_from = len(shown)
    os.write(fd, typed.encode() if typed == "\u0004" else (typed + "\n").encode())

deadline = time.monotonic() + BOUND
while time.monotonic() < deadline and read_some(0.2):
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
sys.stdout.flush()
sys.exit(os.waitstatus_to_exitcode(status))
