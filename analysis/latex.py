"""A table as LaTeX a reader can paste: pdflatex-safe (every non-ASCII character escaped or
spelled out), booktabs rules, and no wider than a page.

Widths: every column whose longest cell would push the table past ``TEXT_WIDTH_CM`` is set as a
``p{...}`` column (its text wraps), sized from its share of the characters; numbers stay ``r``.
A table too wide even with every column wrapped to its longest word, in ``\\scriptsize``, is
split by columns into parts, its row names repeated in each. A table of more than ``LONG_ROWS``
rows is a ``longtable`` (it breaks across pages, the header repeated); a shorter one is a
``table`` float. The header comment names the packages needed.
"""
from __future__ import annotations

import re
import unicodedata

import pandas as pd

TEXT_WIDTH_CM = 11.2        # below the article class's \textwidth at 10 pt: 345 pt = 12.1 cm
FONTS = {r"\footnotesize": 0.19, r"\scriptsize": 0.16}   # cm per character, on average (bold headers too)
GAP_CM = 0.22               # 2 x \tabcolsep, set to 3 pt
LONG_ROWS = 30
PACKAGES = r"\usepackage{booktabs} \usepackage{longtable} \usepackage{array}"

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_UNICODE = {"±": r"$\pm$", "−": "$-$", "–": "--", "—": "---", "≤": r"$\leq$", "≥": r"$\geq$",
            "Δ": r"$\Delta$", "δ": r"$\delta$", "×": r"$\times$", "→": r"$\rightarrow$",
            "←": r"$\leftarrow$", "²": r"\textsuperscript{2}", "³": r"\textsuperscript{3}",
            "µ": r"$\mu$", "μ": r"$\mu$", "σ": r"$\sigma$", "≈": r"$\approx$", "·": r"$\cdot$",
            "…": r"\ldots{}", "°": r"$^\circ$", "’": "'", "‘": "`", "“": "``", "”": "''",
            "\u00a0": "~", "✓": "yes", "✗": "no"}


def escape(text) -> str:
    """Any cell -> pdflatex-safe text: LaTeX's specials escaped, known symbols spelled in LaTeX,
    accented letters as their base letter, anything else as '?'."""
    out = []
    for ch in str(text):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(escape(base) if base else "?")
    return "".join(out)


def _plain_length(text: str) -> int:
    return len(re.sub(r"\s+", " ", str(text)))


def column_specs(shown: pd.DataFrame, width_cm: float = TEXT_WIDTH_CM, char_cm: float = 0.19) -> list[str]:
    """'r' / 'l' per column (numbers right-aligned), or 'p{Xcm}' where a column must wrap for the
    table to fit ``width_cm``: the widest columns are capped at one width C (water-filling), the
    largest C that fits, never below a column's longest word."""
    cells = [[str(shown.columns[i])] + [str(v) for v in shown.iloc[:, i]] for i in range(shown.shape[1])]
    length = [max(_plain_length(c) for c in col) * char_cm for col in cells]
    word = [max(len(w) for c in col for w in (c.split() or [""])) * char_cm * 1.15 for col in cells]
    numeric = [all(re.fullmatch(r"[-+−–\d.,%± \[\]()]*", c) for c in col[1:]) for col in cells]
    gap = GAP_CM

    def widths(cap: float) -> list[float]:
        return [max(min(n, cap), w) for n, w in zip(length, word)]

    low, high = 0.0, max(length, default=0.0)
    if sum(length) + gap * len(length) > width_cm:
        for _ in range(40):                              # the largest cap that fits
            mid = (low + high) / 2
            low, high = (mid, high) if sum(widths(mid)) + gap * len(length) <= width_cm else (low, mid)
        cap = low
    else:
        cap = high
    specs = []
    for n, w, num in zip(length, widths(cap), numeric):
        if w < n - 1e-9:
            align = r"\raggedleft" if num else r"\raggedright"
            specs.append(f">{{{align}\\arraybackslash}}p{{{w:.2f}cm}}")
        else:
            specs.append("r" if num else "l")
    return specs


def _narrowest(shown: pd.DataFrame, char_cm: float) -> float:
    """The table's width (cm) with every column wrapped down to its longest word."""
    words = [max(len(w) for c in [str(shown.columns[i]), *map(str, shown.iloc[:, i])] for w in (c.split() or [""]))
             for i in range(shown.shape[1])]
    return sum(words) * char_cm + GAP_CM * len(words)


def _parts(shown: pd.DataFrame, char_cm: float) -> list[pd.DataFrame]:
    """The table split by columns into parts that each fit the page, the leading text columns
    (its row names) repeated in every part; one part when it fits whole."""
    if _narrowest(shown, char_cm) <= TEXT_WIDTH_CM:
        return [shown]
    numeric = [bool(shown.iloc[:, i].astype(str).str.fullmatch(r"[-+−–\d.,%± \[\]()]*").all())
               for i in range(shown.shape[1])]
    keys = next((i for i, n in enumerate(numeric) if n), shown.shape[1])
    keys = max(1, min(keys, 2))
    parts, current = [], []
    for i in range(keys, shown.shape[1]):
        trial = current + [i]
        if current and _narrowest(shown.iloc[:, list(range(keys)) + trial], char_cm) > TEXT_WIDTH_CM:
            parts.append(current)
            trial = [i]
        current = trial
    parts.append(current)
    return [shown.iloc[:, list(range(keys)) + part] for part in parts if part]


def to_latex(name: str, title: str, shown: pd.DataFrame, note: str = "", missing: str = "–") -> str:
    """The table as LaTeX (see the module doc); an empty table is a comment."""
    header = f"% {escape(title)}\n% needs: {PACKAGES}\n"
    if shown.empty or shown.shape[1] == 0:
        return header + "% (empty)\n"
    shown = shown.fillna(missing).astype(str)
    font, char_cm = next(((f, c) for f, c in FONTS.items() if _narrowest(shown, c) <= TEXT_WIDTH_CM),
                         list(FONTS.items())[-1])
    parts = _parts(shown, char_cm)
    if len(parts) > 1:
        return header + "\n".join(
            _one(f"{name}:{k}", f"{title} (part {k} of {len(parts)})", part, note, font, char_cm)
            for k, part in enumerate(parts, 1))
    return header + _one(name, title, shown, note, font, char_cm)


def _one(name: str, title: str, shown: pd.DataFrame, note: str, font: str, char_cm: float) -> str:
    """One table (or longtable) of cells that fit the page as they are."""
    specs = column_specs(shown, TEXT_WIDTH_CM, char_cm)
    head = " & ".join("\\textbf{" + escape(c) + "}" for c in shown.columns) + r" \\"
    rows = [" & ".join(escape(v) for v in row) + r" \\" for row in shown.itertuples(index=False)]
    caption = escape(title) + (f". {escape(note)}" if note else "")
    spec = "".join(specs)
    if len(rows) > LONG_ROWS:
        return ("{" + font + "\\setlength{\\tabcolsep}{3pt}\n" + f"\\begin{{longtable}}{{{spec}}}\n"
                + f"\\caption{{{caption}}}\\label{{tab:{name}}}\\\\\n\\toprule\n{head}\n\\midrule\n\\endfirsthead\n"
                + f"\\toprule\n{head}\n\\midrule\n\\endhead\n\\bottomrule\n\\endlastfoot\n"
                + "\n".join(rows) + "\n\\end{longtable}\n}\n")
    return ("\\begin{table}[htbp]\n\\centering\n" + font + "\n\\setlength{\\tabcolsep}{3pt}\n"
            + f"\\caption{{{caption}}}\\label{{tab:{name}}}\n"
            + f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{head}\n\\midrule\n" + "\n".join(rows)
            + "\n\\bottomrule\n\\end{tabular}\n\\end{table}\n")
