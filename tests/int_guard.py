"""The 30-bit guard: a copy of firmware modules in which every arithmetic result is
checked against MicroPython's small-int range on a 32-bit MCU (|x| < 2**30), to run on
the unix port, whose 64-bit small ints would hide an overflow into a heap long int."""

from __future__ import annotations

import ast
from pathlib import Path

from host.build import firmware_build

GUARD = '''
def _g(x):
    if isinstance(x, int) and (x > 1073741823 or x < -1073741824):
        raise OverflowError("intermediate beyond a 32-bit small int: %d" % x)
    return x
'''


class CheckEveryResult(ast.NodeTransformer):
    """Wraps every arithmetic result in _g(): binary, unary and augmented operations."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.Call(ast.Name("_g", ast.Load()), [node], []), node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return node
        return ast.copy_location(ast.Call(ast.Name("_g", ast.Load()), [node], []), node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        load = ast.parse(ast.unparse(node.target), mode="eval").body
        value = ast.Call(ast.Name("_g", ast.Load()), [ast.BinOp(load, node.op, node.value)], [])
        return ast.copy_location(ast.Assign([node.target], value), node)


def instrument(source: str) -> str:
    tree = ast.fix_missing_locations(CheckEveryResult().visit(ast.parse(source)))
    body = tree.body
    first_code = next(i for i, node in enumerate(body) if not isinstance(node, ast.Import | ast.ImportFrom | ast.Expr))
    tree.body = body[:first_code] + ast.parse(GUARD).body + body[first_code:]
    return ast.unparse(tree)


def guarded_tree(dest: Path, modules: tuple[str, ...]) -> Path:
    """dest/ holding the firmware compiled as flashed (mpy-cross, x64), with the named
    modules instrumented before compiling. Compiled, so that importing them costs the
    MicroPython heap no more than the real modules do."""
    sources = dest / "src"
    for package in firmware_build.PACKAGES:
        (sources / package).mkdir(parents=True)
        for source in (firmware_build.ROOT / package).glob("*.py"):
            text = source.read_text()
            if package == "firmware" and source.name in modules:
                text = instrument(text)
            (sources / package / source.name).write_text(text)
    tree = dest / "mpy"
    firmware_build.compile_tree(tree, firmware_build.ARCH_UNIX_X64, root=sources,
                                modules=firmware_build.sources(sources))
    return tree
