"""Hypothesis strategies that write valid xl.cfg text in every layout libxlu accepts."""

from __future__ import annotations

from hypothesis import strategies as st

from xenkit.config.strings import quote

blank = st.sampled_from(["", " ", "  ", "\t", " \t "])
comment = st.builds(
    lambda body: "#" + body,
    st.text(alphabet=st.characters(blacklist_characters="\n", codec="utf-8"), max_size=20),
)
ident = st.from_regex(r"[a-z][._0-9a-z]{0,12}", fullmatch=True)
number = st.from_regex(r"[0-9][0-9a-fx]{0,6}", fullmatch=True)
text_value = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)


@st.composite
def string_token(draw: st.DrawFn) -> str:
    value = draw(text_value)
    token = quote(value)
    if draw(st.booleans()) and "'" not in value and "\\" not in value and "\n" not in value:
        token = "'" + value.replace("\r", "\\r") + "'"
    return token


atom = st.one_of(number, string_token())


def nlok() -> st.SearchStrategy[str]:
    """Blanks, newlines and comments, as libxlu allows inside a list."""
    piece = st.one_of(blank, st.just("\n"), st.builds(lambda c: c + "\n", comment))
    return st.lists(piece, max_size=3).map("".join)


def list_value(depth: int) -> st.SearchStrategy[str]:
    item = atom if depth <= 0 else st.one_of(atom, st.deferred(lambda: list_value(depth - 1)))

    @st.composite
    def build(draw: st.DrawFn) -> str:
        items = draw(st.lists(item, max_size=4))
        out = "[" + draw(nlok())
        for i, it in enumerate(items):
            if i:
                out += "," + draw(nlok())
            out += it + draw(nlok())
        if items and draw(st.booleans()):
            out += "," + draw(nlok())
        return out + "]"

    return build()


value = st.one_of(atom, list_value(2))


@st.composite
def statement(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["=", "+="]))
    return draw(blank) + draw(ident) + draw(blank) + op + draw(blank) + draw(value) + draw(blank)


@st.composite
def config_text(draw: st.DrawFn) -> str:
    """A whole file. ``+=`` only follows a value of the same shape, as xl requires."""
    lines = []
    shapes: dict[str, bool] = {}
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["stmt", "stmt", "comment", "blank", "semi"]))
        if kind == "comment":
            lines.append(draw(blank) + draw(comment))
        elif kind == "blank":
            lines.append(draw(blank))
        else:
            stmts = []
            for _ in range(2 if kind == "semi" else 1):
                s = draw(statement())
                key, op, rest = _split(s)
                is_list = rest.lstrip().startswith("[")
                if op == "+=" and key in shapes and shapes[key] != is_list:
                    s = s.replace("+=", "=", 1)
                    op = "="
                if op == "=" or key not in shapes:
                    shapes[key] = is_list
                stmts.append(s)
            line = ";".join(stmts)
            if draw(st.booleans()):
                line += draw(blank) + draw(comment)
            lines.append(line)
    text = "\n".join(lines)
    if lines and ("#" in lines[-1] or draw(st.booleans())):
        text += "\n"  # a comment on the last line needs its newline, as xl requires
    return text


def _split(stmt: str) -> tuple[str, str, str]:
    s = stmt.strip()
    i = s.index("=")
    if s[i - 1] == "+":
        return s[: i - 1].strip(), "+=", s[i + 1 :]
    return s[:i].strip(), "=", s[i + 1 :]
