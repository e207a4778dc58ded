"""Read the BTF type information and symbols of a compiled BPF object (pyelftools).

Used to find `const volatile` knobs in .rodata before load, and by the layout test,
which compares the Python decoders with the structs the compiler actually laid out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from capsule.errors import CapsuleError

BTF_MAGIC = 0xEB9F
# kinds whose btf_type carries a size, and the extra bytes each kind appends
_SIZED = {1, 4, 5, 6, 15, 16, 19}
_MODIFIERS = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag
KIND_STRUCT, KIND_UNION, KIND_ARRAY, KIND_PTR = 4, 5, 3, 2


@dataclass
class BtfType:
    id: int
    kind: int
    name: str
    size_or_type: int
    members: list[tuple[str, int, int]]  # (name, type id, bit offset)
    nelems: int = 0
    elem_type: int = 0


def _extra(kind: int, vlen: int) -> int:
    return {
        1: 4,
        3: 12,
        4: 12 * vlen,
        5: 12 * vlen,
        6: 8 * vlen,
        13: 8 * vlen,
        14: 4,
        15: 12 * vlen,
        17: 4,
        19: 12 * vlen,
    }.get(kind, 0)


class Btf:
    """The types of one .BTF section."""

    def __init__(self, data: bytes):
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            struct.unpack_from("<HBBIIIII", data)
        )
        if magic != BTF_MAGIC:
            raise ValueError(f"bad BTF magic {magic:#x}")
        self.strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types: dict[int, BtfType] = {}
        self._parse(data[hdr_len + type_off : hdr_len + type_off + type_len])

    def _str(self, off: int) -> str:
        return self.strings[off : self.strings.index(b"\0", off)].decode()

    def _parse(self, blob: bytes) -> None:
        pos, tid = 0, 1
        while pos < len(blob):
            name_off, info, size_or_type = struct.unpack_from("<III", blob, pos)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            body = pos + 12
            t = BtfType(tid, kind, self._str(name_off), size_or_type, [])
            if kind in (KIND_STRUCT, KIND_UNION):
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from(
                        "<III", blob, body + 12 * i
                    )
                    bit_off = m_off & 0xFFFFFF if kflag else m_off
                    t.members.append((self._str(m_name), m_type, bit_off))
            elif kind == KIND_ARRAY:
                t.elem_type, _index, t.nelems = struct.unpack_from("<III", blob, body)
            self.types[tid] = t
            pos, tid = body + _extra(kind, vlen), tid + 1

    def size_of(self, tid: int) -> int:
        t = self.types[tid]
        if t.kind in _SIZED:
            return t.size_or_type
        if t.kind == KIND_PTR:
            return 8
        if t.kind == KIND_ARRAY:
            return t.nelems * self.size_of(t.elem_type)
        if t.kind in _MODIFIERS:
            return self.size_of(t.size_or_type)
        raise ValueError(f"BTF type {tid} (kind {t.kind}) has no size")

    def find(self, name: str, kind: int = KIND_STRUCT) -> BtfType:
        for t in self.types.values():
            if t.name == name and t.kind == kind:
                return t
        raise KeyError(f"no BTF type {name!r}")

    def flat_members(self, name: str) -> dict[str, tuple[int, int]]:
        """{member: (byte offset, size)} of a struct, nested structs flattened."""
        out: dict[str, tuple[int, int]] = {}
        self._flatten(self.find(name), 0, out)
        return out

    def _flatten(self, t: BtfType, base: int, out: dict) -> None:
        for m_name, m_type, bit_off in t.members:
            target = self._resolve(m_type)
            if target.kind == KIND_STRUCT:
                self._flatten(target, base + bit_off // 8, out)
            else:
                out[m_name] = (base + bit_off // 8, self.size_of(m_type))

    def _resolve(self, tid: int) -> BtfType:
        t = self.types[tid]
        while t.kind in _MODIFIERS:
            t = self.types[t.size_or_type]
        return t


def read_object_btf(path: str | Path) -> Btf:
    with open(path, "rb") as f:
        section = ELFFile(f).get_section_by_name(".BTF")
        if section is None:
            raise CapsuleError(
                f"failed to read BTF of {path}: no .BTF section",
                hint="compile with clang -g",
            )
        return Btf(section.data())


def symbol(path: str | Path, name: str, section: str) -> tuple[int, int]:
    """(offset, size) of a global variable in one section of an object file."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        for sym in symtab.iter_symbols() if symtab else ():
            if sym.name != name or not isinstance(sym["st_shndx"], int):
                continue
            if elf.get_section(sym["st_shndx"]).name == section:
                return sym["st_value"], sym["st_size"]
    raise CapsuleError(f"failed to find {name} in section {section} of {path}")
