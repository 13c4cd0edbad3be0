"""Line-preserving INI edits: read or set one key, every other byte of the file unchanged."""

import re

_SECTION = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*$")


def _key_re(key):
    return re.compile(r"^(\s*" + re.escape(key) + r"\s*[=:][ \t]*)(.*?)([ \t]*)(\r?\n)?$")


def _sections(lines):
    """[(name, header index, end index)] in file order; end is exclusive."""
    out = []
    for i, line in enumerate(lines):
        m = _SECTION.match(line.rstrip("\r\n"))
        if m:
            if out:
                out[-1][2] = i
            out.append([m.group(1), i, len(lines)])
    return out


def ini_get(text, section, key):
    """The last value of ``key`` in ``section`` (as oslo.config and paste read it), or None."""
    lines = text.splitlines(keepends=True)
    value = None
    rx = _key_re(key)
    for name, start, end in _sections(lines):
        if name != section:
            continue
        for line in lines[start + 1:end]:
            m = rx.match(line)
            if m:
                value = m.group(2)
    return value


def ini_set(text, section, key, value, comment=None):
    """``text`` with ``key = value`` in ``section``; every other byte unchanged.

    Replaces the value of the last ``key`` line of the section (keeping its spacing), else adds
    ``key = value`` after the section's last non-blank line, else appends the section."""
    lines = text.splitlines(keepends=True)
    rx = _key_re(key)
    secs = [s for s in _sections(lines) if s[0] == section]
    hit = None
    for _, start, end in secs:
        for i in range(start + 1, end):
            if rx.match(lines[i]):
                hit = i
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    if hit is not None:
        m = rx.match(lines[hit])
        lines[hit] = m.group(1) + value + m.group(3) + (m.group(4) or "")
    elif secs:
        _, start, end = secs[-1]
        at = start + 1
        for i in range(start + 1, end):
            if lines[i].strip():
                at = i + 1
        if at > 0 and not lines[at - 1].endswith("\n"):
            lines[at - 1] += eol
        lines[at:at] = (["%s%s" % (comment, eol)] if comment else []) + [
            "%s = %s%s" % (key, value, eol)]
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += eol
        if lines and lines[-1].strip():
            lines.append(eol)
        lines += ["[%s]%s" % (section, eol)] + (["%s%s" % (comment, eol)] if comment else []) \
            + ["%s = %s%s" % (key, value, eol)]
    return "".join(lines)

