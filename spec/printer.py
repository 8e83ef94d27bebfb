"""AST -> canonical spec text. For every surface AST `a`: `parse(show_spec(a)) == a`.

Parentheses are added exactly where the grammar's precedence needs them (see grammar.lark).
Resolved nodes (`Var`, `Sym`, `EnumLit`, `Some`) print as their surface spelling, so checked specs and
counterexample formulas print readably too.
"""

from __future__ import annotations

from . import ast as A

# Precedence levels, loosest first; an operand printed where a tighter level is needed gets parens.
_QUANT, _IFF, _IMPLIES, _OR, _AND, _NOT, _CMP, _SUM, _ATOM = range(9)
_BINOP_LEVEL = {"iff": _IFF, "implies": _IMPLIES, "or": _OR, "and": _AND, "+": _SUM, "-": _SUM}
_BINOP_LEVEL.update({op: _CMP for op in A.CMP_OPS})


def show_type(t: A.TypeRef) -> str:
    return str(t)


def show_binders(bs: tuple[A.Binder, ...] | tuple[A.Var, ...]) -> str:
    return ", ".join(f"{b.name}: {show_type(b.type)}" for b in bs)


def show_expr(e: A.Expr, level: int = _QUANT) -> str:
    """Print e so that it parses back at `level` (the loosest level its context admits)."""
    text, own = _expr(e)
    return f"({text})" if own < level else text


def _expr(e: A.Expr) -> tuple[str, int]:
    match e:
        case A.Name(name) | A.Var(name):
            return name, _ATOM
        case A.EnumLit(_, value):
            return value, _ATOM
        case A.App(name, args) | A.Sym(name, args) | A.ParamApp(name, args):
            return f"{name}({', '.join(show_expr(a) for a in args)})", _ATOM
        case A.Some(arg):
            return _expr(arg)
        case A.BoolLit(v):
            return ("true" if v else "false"), _ATOM
        case A.IntLit(v):
            return str(v), _ATOM
        case A.NoneLit():
            return "none", _ATOM
        case A.Not(arg):
            return f"not {show_expr(arg, _NOT)}", _NOT
        case A.BinOp(op, left, right):
            lv = _BINOP_LEVEL[op]
            if op == "implies":  # right-associative
                lhs, rhs = show_expr(left, lv + 1), show_expr(right, lv)
            elif lv in (_IFF, _CMP):  # non-associative
                lhs, rhs = show_expr(left, lv + 1), show_expr(right, lv + 1)
            else:  # left-associative
                lhs, rhs = show_expr(left, lv), show_expr(right, lv + 1)
            return f"{lhs} {op} {rhs}", lv
        case A.Quant(kind, binders, body) | A.SurfaceQuant(kind, binders, body):
            return f"{kind} {show_binders(binders)}. {show_expr(body)}", _QUANT
        case A.Count(binders, body) | A.SurfaceCount(binders, body):
            return f"count {{ {show_binders(binders)} | {show_expr(body)} }}", _ATOM
        case A.Ite(c, t, f):
            # An unparenthesised else-branch runs to the end of the enclosing expression.
            return f"if {show_expr(c)} then {show_expr(t)} else {show_expr(f)}", _QUANT
    raise TypeError(f"not an expression: {e!r}")


def _stmt(s: A.Stmt | A.SurfaceStmt, indent: str) -> list[str]:
    """A statement as written or resolved: both print the same."""
    match s:
        case A.Requires(cond):
            return [f"{indent}requires {show_expr(cond)}"]
        case A.Assign(target, value) | A.SurfaceAssign(target, value):
            return [f"{indent}{show_expr(target)} := {show_expr(value)}"]
        case A.Insert(target) | A.SurfaceInsert(target):
            return [f"{indent}insert {show_expr(target)}"]
        case A.Remove(target) | A.SurfaceRemove(target):
            return [f"{indent}remove {show_expr(target)}"]
        case A.ForallUpdate(binders, body) | A.SurfaceForallUpdate(binders, body):
            inner = _stmt(body, indent)
            return [f"{indent}forall {show_binders(binders)}. {inner[0].lstrip()}", *inner[1:]]
        case A.IfUpdate(cond, then, else_) | A.SurfaceIfUpdate(cond, then, else_):
            out = [f"{indent}if {show_expr(cond)} {{"]
            out += [line for u in then for line in _stmt(u, indent + "  ")]
            if else_:
                out.append(f"{indent}}} else {{")
                out += [line for u in else_ for line in _stmt(u, indent + "  ")]
            out.append(f"{indent}}}")
            return out
    raise TypeError(f"not a statement: {s!r}")


def show_update(u: A.Update | A.SurfaceUpdate) -> str:
    """One update on one line (nested blocks joined), for messages."""
    return " ".join(line.strip() for line in _stmt(u, ""))


def _mut(d: A.RelationDecl | A.FunctionDecl | A.ConstDecl) -> str:
    return "ghost " if d.ghost else "" if d.mutable else "immutable "


def show_decl(d: A.Decl) -> str:
    lines = [f"# {line}".rstrip() for line in d.doc]
    match d:
        case A.SortDecl(name, bound):
            lines.append(f"sort {name}" + (f" [{bound}]" if bound is not None else ""))
        case A.EnumDecl(name, values):
            lines.append(f"enum {name} {{ {', '.join(values)} }}")
        case A.RelationDecl(name, args):
            lines.append(f"{_mut(d)}relation {name}({', '.join(map(show_type, args))})")
        case A.FunctionDecl(name, args, result):
            lines.append(f"{_mut(d)}function {name}({', '.join(map(show_type, args))}): {show_type(result)}")
        case A.ConstDecl(name, type_):
            lines.append(f"{_mut(d)}const {name}: {show_type(type_)}")
        case A.DefineDecl(name, params, result, body):
            lines.append(f"define {name}({show_binders(params)}): {show_type(result)} =")
            lines.append(f"  {show_expr(body)}")
        case A.AxiomDecl(name, formula):
            lines += [f"axiom {name}:", f"  {show_expr(formula)}"]
        case A.InvariantDecl(name, formula):
            lines += [f"invariant {name}:", f"  {show_expr(formula)}"]
        case A.InitDecl(body):
            lines.append("init {")
            lines += [line for s in body for line in _stmt(s, "  ")]
            lines.append("}")
        case A.ActionDecl(name, params, body):
            lines.append(f"action {name}({show_binders(params)}) {{")
            lines += [line for s in body for line in _stmt(s, "  ")]
            lines.append("}")
        case A.WitnessDecl(name, shape, formula, required):
            lines.append(f"{'required ' if required else ''}witness {name}:")
            lines.append(f"  reach {'; '.join(map(str, shape))}")
            if formula is not None:
                lines.append(f"  such that {show_expr(formula)}")
        case _:
            raise TypeError(f"not a declaration: {d!r}")
    return "\n".join(lines)


def show_spec(spec: A.SpecFile) -> str:
    return "\n\n".join(show_decl(d) for d in spec.decls) + "\n"
