"""Symbolic shapes: dimensions, tensor types, patterns and unification. Pure Python.

A dimension is an ``int`` (known size) or a :class:`Sym`, a polynomial with
integer coefficients over named symbols (``N``, ``T*D``, ``N+M``). Unification
of named dims is a union-find kept by :class:`DimEnv`; block shape rules use
:meth:`ShapeCall.match` with einops-like patterns such as ``"... F"`` or ``"N F"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

Monomial = tuple[str, ...]  # sorted symbol names, repeated for powers


class Sym:
    """A symbolic dimension: sum of coefficient * product-of-symbols terms."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: dict[Monomial, int] | str):
        if isinstance(terms, str):
            terms = {(terms,): 1}
        self.terms: dict[Monomial, int] = {m: c for m, c in terms.items() if c != 0}
        self._hash = hash(frozenset(self.terms.items()))

    # -- construction helpers
    @staticmethod
    def of(value: Dim) -> dict[Monomial, int]:
        if isinstance(value, Sym):
            return dict(value.terms)
        return {(): int(value)} if value else {}

    @staticmethod
    def normalise(terms: dict[Monomial, int]) -> Dim:
        terms = {m: c for m, c in terms.items() if c != 0}
        if not terms:
            return 0
        if set(terms) == {()}:
            return terms[()]
        return Sym(terms)

    @property
    def symbols(self) -> set[str]:
        return {s for m in self.terms for s in m}

    @property
    def name(self) -> str | None:
        """The symbol's name when this dim is one bare symbol, like ``N``."""
        if len(self.terms) == 1:
            ((mono, coeff),) = self.terms.items()
            if coeff == 1 and len(mono) == 1:
                return mono[0]
        return None

    def substitute(self, env: dict[str, Dim]) -> Dim:
        total: Dim = 0
        for mono, coeff in self.terms.items():
            term: Dim = coeff
            for s in mono:
                term = dim_mul(term, env.get(s, Sym(s)))
            total = dim_add(total, term)
        return total

    # -- arithmetic
    def __add__(self, other: Dim) -> Dim:
        return dim_add(self, other)

    __radd__ = __add__

    def __sub__(self, other: Dim) -> Dim:
        return dim_add(self, dim_mul(other, -1))

    def __rsub__(self, other: Dim) -> Dim:
        return dim_add(other, dim_mul(self, -1))

    def __mul__(self, other: Dim) -> Dim:
        return dim_mul(self, other)

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sym):
            return self.terms == other.terms
        return False

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        parts = []
        for mono, coeff in sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), mc[0])):
            body = "*".join(mono)
            if not mono:
                parts.append(str(coeff))
            elif coeff == 1:
                parts.append(body)
            elif coeff == -1:
                parts.append("-" + body)
            else:
                parts.append(f"{coeff}*{body}")
        text = " + ".join(parts).replace("+ -", "- ")
        return text

    __repr__ = __str__


Dim = int | Sym


def dim_add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    terms = Sym.of(a)
    for m, c in Sym.of(b).items():
        terms[m] = terms.get(m, 0) + c
    return Sym.normalise(terms)


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    out: dict[Monomial, int] = {}
    for ma, ca in Sym.of(a).items():
        for mb, cb in Sym.of(b).items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0) + ca * cb
    return Sym.normalise(out)


def dim_str(d: Dim | None) -> str:
    return "_" if d is None else str(d)


def is_known(d: Dim | None) -> bool:
    return isinstance(d, int)


DTYPE_NAMES = ("float", "long", "int", "bool")


@dataclass(frozen=True)
class TensorType:
    """The static type of a tensor value.

    ``shape`` lists the trailing dimensions; ``None`` in it means "some unknown
    size" (``_``). ``variadic`` means unknown leading dimensions (``...``) come
    before ``shape``. ``why`` says where the shape came from, for notes.
    """

    shape: tuple[Dim | None, ...]
    dtype: str = "float"
    variadic: bool = False
    why: str | None = field(default=None, compare=False)

    @property
    def rank(self) -> int | None:
        return None if self.variadic else len(self.shape)

    def __str__(self) -> str:
        dims = (["..."] if self.variadic else []) + [dim_str(d) for d in self.shape]
        text = "[" + ", ".join(dims) + "]"
        return text if self.dtype == "float" else f"{text} {self.dtype}"

    def with_shape(self, shape: Iterable[Dim | None], why: str | None = None) -> TensorType:
        return TensorType(tuple(shape), self.dtype, self.variadic, why)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype, self.variadic, self.why)

    def concrete(self) -> tuple[int, ...] | None:
        if self.variadic or not all(isinstance(d, int) for d in self.shape):
            return None
        return tuple(self.shape)  # type: ignore[arg-type]


def scalar(dtype: str = "float", why: str | None = None) -> TensorType:
    return TensorType((), dtype, False, why)


# --------------------------------------------------------------------------- unification


class DimConflict(Exception):
    def __init__(self, a: Dim, b: Dim):
        super().__init__(f"{a} != {b}")
        self.a, self.b = a, b


class DimEnv:
    """Union-find over symbol names; a class may be bound to a concrete value."""

    def __init__(self, bound: dict[str, int] | None = None):
        self.parent: dict[str, str] = {}
        self.value: dict[str, Dim] = {}
        self.origin: dict[str, str] = {}
        self._fresh = 0
        self.generated: set[str] = set()
        # Symbols the model's inputs declare: two of them are two sizes, never made equal by a
        # use (a [B, T] mask where [T, S] belongs would otherwise merge B and T silently).
        self.apart: set[str] = set()
        for k, v in (bound or {}).items():
            self.value[k] = v
            self.origin[k] = "given"

    def find(self, s: str) -> str:
        root = s
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(s, s) != root:
            self.parent[s], s = root, self.parent[s]
        return root

    def resolve(self, d: Dim | None) -> Dim | None:
        """Replace every bound or aliased symbol by its representative or value."""
        if d is None or isinstance(d, int):
            return d
        env: dict[str, Dim] = {}
        for s in d.symbols:
            root = self.find(s)
            val = self.value.get(root)
            if val is not None:
                env[s] = self.resolve(val)
            elif root != s:
                env[s] = Sym(root)
        return d.substitute(env) if env else d  # most dims are free symbols: nothing to rebuild

    def resolve_value(self, v: object) -> object:
        """``v`` with every size in it (a Sym, in lists too) resolved, an int where known."""
        if isinstance(v, Sym):
            return self.resolve(v)
        if isinstance(v, list):
            return [self.resolve_value(x) for x in v]
        if isinstance(v, tuple):
            return tuple(self.resolve_value(x) for x in v)
        return v

    def resolve_type(self, t: TensorType) -> TensorType:
        return TensorType(tuple(self.resolve(d) for d in t.shape), t.dtype, t.variadic, t.why)

    def unify(self, a: Dim | None, b: Dim | None) -> Dim | None:
        """Make ``a`` and ``b`` equal; return the unified dim or raise DimConflict."""
        a, b = self.resolve(a), self.resolve(b)
        if a is None:
            return b
        if b is None:
            return a
        if a == b:
            return a
        if isinstance(a, Sym) and a.name is not None:
            return self._bind(a.name, b)
        if isinstance(b, Sym) and b.name is not None:
            return self._bind(b.name, a)
        if isinstance(a, int) and isinstance(b, int):
            raise DimConflict(a, b)
        # Two compound expressions: solve a linear single unknown if possible.
        diff = dim_add(a, dim_mul(b, -1))
        if isinstance(diff, Sym):
            linear = [(m, c) for m, c in diff.terms.items() if len(m) == 1]
            const = diff.terms.get((), 0)
            if len(diff.terms) == len(linear) + (1 if const else 0) and len(linear) == 1:
                (mono, coeff), = linear
                if (-const) % coeff == 0 and (-const) // coeff > 0:
                    self._bind(mono[0], (-const) // coeff)
                    return self.resolve(a)
            signs = {c > 0 for c in diff.terms.values()}
            if len(signs) == 1:  # every term one sign: a - b is never 0 for positive sizes (64*B vs 65*B)
                raise DimConflict(a, b)
            # Not decidable statically: accept, and let the runtime check it.
            return a
        raise DimConflict(a, b)

    def _bind(self, name: str, other: Dim) -> Dim:
        root = self.find(name)
        if isinstance(other, Sym) and other.name is not None:
            oroot = self.find(other.name)
            if oroot == root:
                return Sym(root)
            if root in self.apart and oroot in self.apart:
                raise DimConflict(Sym(root), Sym(oroot))
            # Keep the name a user wrote as the representative, not a generated one.
            if oroot in self.generated and root not in self.generated:
                root, oroot = oroot, root
            self.parent[root] = oroot
            if root in self.value and oroot not in self.value:
                self.value[oroot] = self.value.pop(root)
            return Sym(oroot)
        if isinstance(other, Sym) and root in other.symbols:
            return other  # recursive definition like N = N + 1: leave it to runtime
        self.value[root] = other
        return other

    def declare(self, name: str) -> Sym:
        """Register a symbol the user wrote, so that fresh names never collide with it."""
        self.parent.setdefault(name, name)
        return Sym(name)

    def fresh(self, base: str) -> Sym:
        """A new symbolic dim named after ``base``: ``G`` if unused, else ``G1``, ``G2``..."""
        name, k = base, 0
        while name in self.parent or name in self.value:
            k += 1
            name = f"{base}{k}"
        self.parent[name] = name
        self.generated.add(name)
        return Sym(name)


# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class Pattern:
    text: str
    tokens: tuple[str, ...]

    @property
    def variadic(self) -> bool:
        return bool(self.tokens) and self.tokens[0] == "..."

    @property
    def dims(self) -> tuple[str, ...]:
        return self.tokens[1:] if self.variadic else self.tokens

    def display(self) -> str:
        return "[" + ", ".join(self.tokens) + "]"


@lru_cache(maxsize=512)
def parse_pattern(text: str) -> Pattern:
    """``"... F"`` / ``"N F"`` / ``"2 E"`` / ``""`` (scalar); parsed once and cached."""
    tokens = tuple(text.replace(",", " ").split())
    if "..." in tokens[1:]:
        raise ValueError(f"`...` may only lead a pattern: {text!r}")
    return Pattern(text, tokens)


class ShapeError(Exception):
    """Raised by a shape rule; the checker turns it into a diagnostic.

    ``arg`` names the offending tensor input (its span gets the caret), or a
    hyperparameter name, or None for the whole call.
    """

    def __init__(
        self,
        message: str,
        arg: str | None = None,
        label: str = "",
        help: str | None = None,
        code: str = "E0301",
    ):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.label = label
        self.help = help
        self.code = code


class Bindings(dict):
    """Result of :meth:`ShapeCall.match`: pattern names to dims, also as attributes."""

    def __getattr__(self, name: str) -> Dim:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


class ShapeCall:
    """What a shape rule sees: the call's tensor input types and a dim environment."""

    def __init__(
        self,
        block: str,
        inputs: dict[str, TensorType],
        env: DimEnv | None = None,
        param_text: str = "",
    ):
        self.block = block
        self.inputs = inputs
        self.env = env or DimEnv()
        for t in inputs.values():  # fresh names must never collide with the caller's symbols
            for d in t.shape:
                if isinstance(d, Sym):
                    for s in d.symbols:
                        self.env.declare(s)
        self.param_text = param_text

    def has(self, name: str) -> bool:
        return name in self.inputs

    def type(self, name: str) -> TensorType:
        return self.env.resolve_type(self.inputs[name])

    def match(self, name: str, pattern: str, dtype: str | tuple[str, ...] | None = None, **known: Dim | None) -> Bindings:
        """Match input ``name`` against ``pattern``; unify named dims with ``known``.

        ``dtype`` may be one dtype name, a tuple of allowed ones, or ``"floating"``.
        Returns the bindings of the pattern's names (``...`` is not bound).
        """
        t = self.type(name)
        pat = parse_pattern(pattern)
        self._check_dtype(name, t, dtype)
        expected = self._expected_text(pat, known)
        if t.variadic and not pat.variadic:
            if len(t.shape) > len(pat.dims):
                self._rank_error(name, t, expected, pat)
            # unknown leading dims: cannot check the rank statically; bind what we can
            dims: list[Dim | None] = [None] * (len(pat.dims) - len(t.shape)) + list(t.shape)
        elif pat.variadic:
            if len(t.shape) < len(pat.dims) and not t.variadic:
                self._rank_error(name, t, expected, pat)
            dims = list(t.shape[len(t.shape) - len(pat.dims):]) if pat.dims else []
            if len(dims) < len(pat.dims):
                dims = [None] * (len(pat.dims) - len(dims)) + dims
        else:
            if len(t.shape) != len(pat.dims):
                self._rank_error(name, t, expected, pat)
            dims = list(t.shape)
        out = Bindings()
        for tok, d in zip(pat.dims, dims):
            if tok == "_":
                continue
            if tok.lstrip("-").isdigit():
                want: Dim | None = int(tok)
            elif tok in out:
                want = out[tok]
            elif tok in known:
                want = known[tok]
            else:
                want = None
            try:
                got = self.env.unify(d, want)
            except DimConflict:
                raise ShapeError(
                    f"shape mismatch in argument `{name}` of `{self.block}`",
                    arg=name,
                    label=f"expected {self._expected_text(pat, {**known, **out})}, found {t}",
                ) from None
            out[tok] = got if got is not None else self.env.fresh(tok)
        return out

    def _check_dtype(self, name: str, t: TensorType, dtype: str | tuple[str, ...] | None) -> None:
        if dtype is None:
            return
        allowed = (dtype,) if isinstance(dtype, str) else dtype
        if "floating" in allowed:
            allowed = tuple(a for a in allowed if a != "floating") + ("float",)
        if t.dtype not in allowed:
            raise ShapeError(
                f"dtype mismatch in argument `{name}` of `{self.block}`",
                arg=name,
                label=f"expected {' or '.join(allowed)}, found {t.dtype}",
                code="E0302",
            )

    def _rank_error(self, name: str, t: TensorType, expected: str, pat: Pattern) -> None:
        raise ShapeError(
            f"shape mismatch in argument `{name}` of `{self.block}`",
            arg=name,
            label=f"expected {expected}, found {t}",
            code="E0303",
        )

    def _expected_text(self, pat: Pattern, known: dict[str, Dim | None]) -> str:
        parts = []
        for tok in pat.tokens:
            v = known.get(tok)
            v = self.env.resolve(v) if v is not None else None
            parts.append(dim_str(v) if v is not None else tok)
        return "[" + ", ".join(parts) + "]"

    def tensor(self, shape: Iterable[Dim | None], dtype: str = "float", like: str | None = None, why: str | None = None) -> TensorType:
        """An output type; ``like=name`` keeps that input's unknown leading dims."""
        variadic = self.type(like).variadic if like is not None else False
        return TensorType(tuple(self.env.resolve(d) if d is not None else None for d in shape), dtype, variadic, why)

    def keep(self, name: str, dims: Iterable[Dim | None] | None = None, dtype: str | None = None, why: str | None = None) -> TensorType:
        """Input ``name``'s type with its trailing dims replaced by ``dims`` (all kept when None)."""
        t = self.type(name)
        if dims is None:
            return TensorType(t.shape, dtype or t.dtype, t.variadic, why)
        dims = list(dims)
        lead = t.shape[: max(len(t.shape) - len(dims), 0)]
        return TensorType(tuple(lead) + tuple(dims), dtype or t.dtype, t.variadic, why)

    def fresh(self, base: str) -> Sym:
        return self.env.fresh(base)

    def unify(self, a: Dim | None, b: Dim | None, arg: str | None = None, what: str = "") -> Dim | None:
        try:
            return self.env.unify(a, b)
        except DimConflict:
            raise ShapeError(
                f"dimension conflict in `{self.block}`" + (f": {what}" if what else ""),
                arg=arg,
                label=f"{dim_str(self.env.resolve(a))} != {dim_str(self.env.resolve(b))}",
                code="E0306",
            ) from None


def broadcast(a: TensorType, b: TensorType, env: DimEnv) -> TensorType:
    """torch broadcasting of two types; raises DimConflict on a clash."""
    sa, sb = list(a.shape), list(b.shape)
    n = max(len(sa), len(sb))
    sa = [1] * (n - len(sa)) + sa if not a.variadic or len(sa) >= n else sa
    sb = [1] * (n - len(sb)) + sb if not b.variadic or len(sb) >= n else sb
    out: list[Dim | None] = []
    for da, db in zip(sa, sb):
        da, db = env.resolve(da), env.resolve(db)
        if da == 1:
            out.append(db)
        elif db == 1:
            out.append(da)
        else:
            out.append(env.unify(da, db))
    dtype = a.dtype if a.dtype == b.dtype else ("float" if "float" in (a.dtype, b.dtype) else a.dtype)
    return TensorType(tuple(out), dtype, a.variadic or b.variadic)
