"""Text -> surface AST. Syntax errors become `SpecError` with file:line:col and what was expected."""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
from contextlib import suppress
from functools import lru_cache
from importlib.util import find_spec
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import ast as A
from .errors import Diagnostic, SpecError, source_lines
from .node import replace

if TYPE_CHECKING:
    from lark import Lark, Token

MAX_INT_DIGITS = 18

# How terminals are named in "expected: ..." lines.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "ADDOP": "'+' or '-'",
    "IMMUTABLE": "'immutable'",
    "GHOST": "'ghost'",
    "OPTIONAL": "'?'",
    "REQUIRED": "'required'",
    "ANY": "'any'",
    "STAR": "'*'",
    "$END": "end of file",
}


# The spellings people bring from other languages, and what this one says instead.
_CHAR_HINTS = {
    "&": "'and' (the language spells its connectives as words)",
    "!": "'not', or '!=' for inequality",
    "~": "'not'",
    "^": "'and'",
    "\\": "'and', 'or' or a name",
    "'": "a name (the language has no strings)",
    '"': "a name (the language has no strings)",
}


_OPTIONS: dict[str, Any] = {"parser": "lalr", "lexer": "basic", "propagate_positions": True,
                            "maybe_placeholders": False}
# Bump when what the parser cache holds changes form.
_CACHE_FORMAT = "dmm-parser/1"


def _grammar() -> str:
    return Path(__file__).with_name("grammar.lark").read_text()  # package data, installed beside this file


@lru_cache(maxsize=1)
def _parser() -> Lark:
    """The parser built by lark itself: the fallback, and the one whose exceptions word syntax errors."""
    from lark import Lark

    # cache=True keeps the compiled LALR tables in the temp directory, keyed by the grammar's hash.
    return Lark(_grammar(), **_OPTIONS, cache=True)


def parser_cache_dir() -> Path:
    """Where the standalone parser is kept: $DMM_PARSER_CACHE, else the user's cache folder."""
    if os.environ.get("DMM_PARSER_CACHE"):
        return Path(os.environ["DMM_PARSER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dmm"


def _cache_key(grammar: str) -> str:
    """Everything the cached parser depends on: the grammar, the options, the Python that compiled
    it (marshal's format is per version) and the installed lark (it generated the code)."""
    spec = find_spec("lark")
    origin = Path(spec.origin) if spec and spec.origin else None
    lark_id = f"{origin}:{origin.stat().st_mtime_ns}" if origin and origin.exists() else "?"
    text = "\n".join([_CACHE_FORMAT, sys.version, lark_id, repr(sorted(_OPTIONS.items())), grammar])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@lru_cache(maxsize=1)
def _standalone() -> ModuleType | None:
    """lark's standalone parser for the grammar (the LALR tables and lark's runtime in one module),
    compiled once and kept in parser_cache_dir(): loading it costs a few ms, where importing lark
    and loading its own cache costs ~30. None when it cannot be had (then lark parses)."""
    try:
        grammar = _grammar()
        path = parser_cache_dir() / f"parser-{_cache_key(grammar)}.marshal"
    except OSError:
        return None
    try:
        code = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):  # absent, unreadable or damaged: made again
        code = _compile_standalone(path)
    if code is None:
        return None
    name = f"{__package__}._standalone_parser"
    module = sys.modules[name] = ModuleType(name)  # its dataclasses look their module up there
    try:
        exec(code, module.__dict__)  # noqa: S102 - code lark generated from our own grammar
        vars(module)["parser"] = module.Lark_StandAlone()
    except Exception:  # noqa: BLE001 - a cache entry that does not load is never an error: lark parses
        del sys.modules[name]
        return None
    return module


def _compile_standalone(path: Path) -> Any:
    """Generate and compile the standalone parser and keep it at `path`; None when `path` cannot be
    written (a read-only home or checkout): generating it per process would cost more than lark."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            return None
    except OSError:
        return None
    from lark.tools.standalone import gen_standalone

    out = StringIO()
    gen_standalone(_parser(), out=out)
    code = compile(out.getvalue(), "<dmm standalone parser>", "exec")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(marshal.dumps(code))
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except OSError:
        with suppress(OSError):
            tmp.unlink()
        return None
    return code


def _describe(terminals: set[str] | frozenset[str]) -> str:
    parser = _parser()
    by_name = {t.name: t for t in parser.terminals}
    words = set()
    for name in terminals:
        if name in _TERMINAL_WORDS:
            words.add(_TERMINAL_WORDS[name])
        elif name in by_name and by_name[name].pattern.type == "str":
            words.add(repr(by_name[name].pattern.value))
        else:
            words.add(name.lower())
    return ", ".join(sorted(words))


def _end_loc(file: str, text: str) -> A.Loc:
    lines = source_lines(text.removesuffix("\n"))  # the end of the last line
    return A.Loc(file, len(lines), len(lines[-1]) + 1)


def parse(text: str, file: str = "<spec>") -> A.SpecFile:
    """Parse spec text into a surface AST, or raise SpecError."""
    fast = _standalone()
    if fast is not None:
        try:
            tree = fast.parser.parse(text)
        except fast.UnexpectedInput:  # a syntax error: lark words it, exactly as without the cache
            pass
        else:
            return _to_spec(tree, fast.Tree, text, file)
    from lark import Tree

    return _to_spec(_lark_parse(text, file), Tree, text, file)


def _lark_parse(text: str, file: str) -> Any:
    """The tree lark's own parser makes of the text, or SpecError saying where and what was expected."""
    import lark

    try:
        return _parser().parse(text)
    except lark.UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END" or tok.line is None:
            loc = _end_loc(file, text)
            what = "unexpected end of file"
        else:
            loc = A.Loc(file, tok.line, tok.column)
            what = f"unexpected {_token_words(tok)}"
        raise SpecError([Diagnostic(loc, what, _describe(e.expected))], text) from None
    except lark.UnexpectedCharacters as e:
        loc = A.Loc(file, e.line, e.column)
        pos = e.pos_in_stream  # lark types it optional; UnexpectedCharacters always sets it
        ch = text[pos] if pos is not None and pos < len(text) else ""
        expected = _CHAR_HINTS.get(ch, "a name, a number, a keyword or one of ( ) { } [ ] , . : := = != < <= > >= + - ? |")
        raise SpecError([Diagnostic(loc, f"unexpected character {ch!r}", expected)], text) from None
    except lark.UnexpectedEOF as e:
        raise SpecError([Diagnostic(_end_loc(file, text), "unexpected end of file", _describe(set(e.expected)))], text) from None


def _to_spec(tree: Any, tree_type: type, text: str, file: str) -> A.SpecFile:
    """The surface AST of a parse tree made by lark or by the standalone parser (tree_type: its Tree)."""
    try:
        decls = _ToAst(file, tree_type).transform(tree)
    except SpecError as e:
        raise SpecError(e.diagnostics, text) from None
    lines = source_lines(text)
    return A.SpecFile(tuple(_with_doc(d, lines) for d in decls.children), file=file, source=text)


def parse_file(path: str | Path) -> A.SpecFile:
    if str(path) == "":
        raise SpecError([Diagnostic(A.Loc("''", 0, 0), "cannot read spec: the path is empty")])
    p = Path(path)
    if p.exists() and not p.is_file() and not p.is_dir():  # a FIFO or a device would block or never end
        raise SpecError([Diagnostic(A.Loc(str(p), 0, 0), "cannot read spec: not a regular file")])
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError([Diagnostic(A.Loc(str(p), 0, 0), f"cannot read spec: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        before = e.object[:e.start]
        line, col = before.count(b"\n") + 1, e.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError([Diagnostic(A.Loc(str(p), line, col), f"spec is not UTF-8 text: byte {e.object[e.start]:#04x} "
                                    f"({e.reason})", "UTF-8 text")]) from None
    return parse(text, str(p))


def _is_token(x: object) -> bool:
    """A token of either parser (lark's and the standalone's Token are both str subclasses; no other
    child of a tree is a str)."""
    return isinstance(x, str)


def _token_words(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name {tok.value!r}"
    if tok.value.isalpha():
        return f"keyword {tok.value!r}"
    return repr(tok.value)


def _with_doc(decl: A.Decl, lines: list[str]) -> A.Decl:
    """Attach the block of `#` comment lines directly above a declaration as its doc."""
    assert decl.loc is not None
    doc: list[str] = []
    i = decl.loc.line - 2
    while i >= 0 and lines[i].lstrip().startswith("#"):
        doc.append(lines[i].lstrip()[1:].strip())
        i -= 1
    if not doc:
        return decl
    return replace(decl, doc=tuple(reversed(doc)))


class _ToAst:
    """Lark tree -> AST nodes, each with its Loc: bottom up, a rule's method called with the rule's
    meta and its children done (what lark's Transformer does with v_args(meta=True)). Written here
    because the tree comes from lark or from the standalone parser, each with its own classes."""

    def __init__(self, file: str, tree_type: type) -> None:
        self.file = file
        self.tree_type = tree_type

    def transform(self, tree: Any) -> Any:
        children = [self.transform(c) if isinstance(c, self.tree_type) else c for c in tree.children]
        rule = getattr(self, tree.data, None)
        return rule(tree.meta, children) if rule else self.tree_type(tree.data, children, tree.meta)

    def _loc(self, meta: object) -> A.Loc:
        return A.Loc(self.file, getattr(meta, "line", 0), getattr(meta, "column", 0))

    def _tloc(self, tok: Token) -> A.Loc:
        return A.Loc(self.file, tok.line or 0, tok.column or 0)

    # ---- declarations
    def sort_decl(self, meta, c):
        return A.SortDecl(str(c[0]), self._int(c[1], meta) if len(c) > 1 else None, loc=self._loc(meta))

    def enum_decl(self, meta, c):
        return A.EnumDecl(str(c[0]), tuple(str(x) for x in c[1:]), loc=self._loc(meta))

    def _split_mut(self, c):
        """(mutable, ghost, the rest) from a declaration's optional modifier."""
        if c and _is_token(c[0]) and c[0].type in ("IMMUTABLE", "GHOST"):
            return c[0].type == "GHOST", c[0].type == "GHOST", c[1:]
        return True, False, c

    def relation_decl(self, meta, c):
        mutable, ghost, c = self._split_mut(c)
        return A.RelationDecl(str(c[0]), tuple(c[1:]), mutable, loc=self._loc(meta), ghost=ghost)

    def function_decl(self, meta, c):
        mutable, ghost, c = self._split_mut(c)
        return A.FunctionDecl(str(c[0]), tuple(c[1:-1]), c[-1], mutable, loc=self._loc(meta), ghost=ghost)

    def const_decl(self, meta, c):
        mutable, ghost, c = self._split_mut(c)
        return A.ConstDecl(str(c[0]), c[1], mutable, loc=self._loc(meta), ghost=ghost)

    def define_decl(self, meta, c):
        return A.DefineDecl(str(c[0]), tuple(c[1:-2]), c[-2], c[-1], loc=self._loc(meta))

    def axiom_decl(self, meta, c):
        return A.AxiomDecl(str(c[0]), c[1], loc=self._loc(meta))

    def invariant_decl(self, meta, c):
        return A.InvariantDecl(str(c[0]), c[1], loc=self._loc(meta))

    def init_decl(self, meta, c):
        return A.InitDecl(tuple(c), loc=self._loc(meta))

    def action_decl(self, meta, c):
        params = tuple(x for x in c[1:] if isinstance(x, A.Binder))
        body = tuple(x for x in c[1:] if not isinstance(x, A.Binder))
        return A.ActionDecl(str(c[0]), params, body, loc=self._loc(meta))

    def witness_decl(self, meta, c):
        required = bool(c) and _is_token(c[0]) and c[0].type == "REQUIRED"
        c = c[1:] if required else c
        shape = tuple(x for x in c[1:] if isinstance(x, A.ShapeStep))
        rest = [x for x in c[1:] if not isinstance(x, A.ShapeStep)]
        return A.WitnessDecl(str(c[0]), shape, rest[0] if rest else None, required, loc=self._loc(meta))

    def shape_step(self, meta, c):
        name = str(c[0])
        return A.ShapeStep(None if c[0].type == "ANY" else name, len(c) > 1, loc=self._loc(meta))

    def type(self, meta, c):
        return A.TypeRef(str(c[0]), len(c) > 1, loc=self._loc(meta))

    def fun_type(self, meta, c):
        *args, result = c
        return A.TypeRef(result.name, result.optional, loc=self._loc(meta), args=tuple(args))

    def binder(self, meta, c):
        return A.Binder(str(c[0]), c[1], loc=self._loc(meta))

    # ---- statements
    def requires(self, meta, c):
        return A.Requires(c[0], loc=self._loc(meta))

    def assign(self, meta, c):
        return A.SurfaceAssign(c[0], c[1], loc=self._loc(meta))

    def insert(self, meta, c):
        return A.SurfaceInsert(c[0], loc=self._loc(meta))

    def remove(self, meta, c):
        return A.SurfaceRemove(c[0], loc=self._loc(meta))

    def forall_update(self, meta, c):
        return A.SurfaceForallUpdate(tuple(c[:-1]), c[-1], loc=self._loc(meta))

    def if_update(self, meta, c):
        return A.SurfaceIfUpdate(c[0], c[1], c[2] if len(c) > 2 else (), loc=self._loc(meta))

    def block(self, meta, c):
        return tuple(c)

    # ---- expressions
    def quant(self, meta, c):
        return A.SurfaceQuant(str(c[0]), tuple(c[1:-1]), c[-1], loc=self._loc(meta))

    def iff_op(self, meta, c):
        return A.BinOp("iff", c[0], c[1], loc=self._loc(meta))

    def implies_op(self, meta, c):
        return A.BinOp("implies", c[0], c[1], loc=self._loc(meta))

    def or_op(self, meta, c):
        return A.BinOp("or", c[0], c[1], loc=self._loc(meta))

    def and_op(self, meta, c):
        return A.BinOp("and", c[0], c[1], loc=self._loc(meta))

    def not_op(self, meta, c):
        return A.Not(c[0], loc=self._loc(meta))

    def cmp_op(self, meta, c):
        return A.BinOp(str(c[1]), c[0], c[2], loc=self._tloc(c[1]))

    def cmpop(self, meta, c):
        return c[0]

    def add_op(self, meta, c):
        return A.BinOp(str(c[1]), c[0], c[2], loc=self._tloc(c[1]))

    def int_lit(self, meta, c):
        return A.IntLit(self._int(c[0], meta), loc=self._loc(meta))

    def _int(self, digits: str, meta: object) -> int:
        # Counts and sizes: anything past 18 digits is a mistake (and Python refuses 4,300 or more)
        if len(digits) > MAX_INT_DIGITS:
            raise SpecError([Diagnostic(self._loc(meta), f"integer literal of {len(digits)} digits",
                                        f"at most {MAX_INT_DIGITS} digits")])
        return int(digits)

    def true_lit(self, meta, c):
        return A.BoolLit(True, loc=self._loc(meta))

    def false_lit(self, meta, c):
        return A.BoolLit(False, loc=self._loc(meta))

    def none_lit(self, meta, c):
        return A.NoneLit(loc=self._loc(meta))

    def ite(self, meta, c):
        return A.Ite(c[0], c[1], c[2], loc=self._loc(meta))

    def count(self, meta, c):
        return A.SurfaceCount(tuple(c[:-1]), c[-1], loc=self._loc(meta))

    def name(self, meta, c):
        return A.Name(str(c[0]), loc=self._loc(meta))

    def app(self, meta, c):
        return A.App(str(c[0]), tuple(c[1:]), loc=self._loc(meta))
