//! A reader for just enough of the kernel's BTF to find struct member
//! offsets, e.g. `sock.__sk_common.skc_daddr`.
//!
//! Why not a crate: aya-obj parses BTF but keeps struct members private, and
//! btf-rs is LGPL, which a statically linked Apache-2.0 binary would rather
//! not carry. The format (Documentation/bpf/btf.rst) is a header, a type
//! section of fixed records with kind-specific tails, and a string section;
//! member lookup needs no more than that.

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading BTF from {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BTF is malformed: {0}")]
    Malformed(String),
    #[error("BTF has no enum `{0}`")]
    NoEnum(String),
    #[error("BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("BTF struct `{strukt}` has no member `{member}` (looking up `{path}`)")]
    NoMember {
        strukt: String,
        member: String,
        path: String,
    },
    #[error("BTF member `{0}` is a bitfield; flowscope needs a byte-aligned member")]
    Bitfield(String),
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset; `bitfield` is the bitfield size (0: not a bitfield).
    bit_offset: u32,
    bitfield: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    /// Size for int/struct/union/enum; referenced type id for modifiers.
    size_or_type: u32,
    /// Element type and count for arrays.
    array: Option<(u32, u32)>,
    members: Vec<Member>,
    /// Enumerators of an enum (name offset, value).
    enumerators: Vec<(u32, i64)>,
}

/// Parsed BTF: types by id and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, Vec<u32>>,
}

/// Where a member is and how big it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub offset: u32,
    pub size: u32,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let b = self.data.get(self.pos..self.pos + 4).ok_or_else(|| {
            BtfError::Malformed(format!("type section truncated at byte {}", self.pos))
        })?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, n: usize) -> Result<(), BtfError> {
        if self.pos + n > self.data.len() {
            return Err(BtfError::Malformed(format!(
                "type section truncated at byte {}",
                self.pos
            )));
        }
        self.pos += n;
        Ok(())
    }
}

fn le_u32(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError::Malformed("header truncated".into()))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF (the only byte order flowscope runs on).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| BtfError::Malformed("shorter than its header".into()))?;
        if magic != MAGIC {
            return Err(BtfError::Malformed(format!("bad magic {magic:#x}")));
        }
        let hdr_len = le_u32(data, 4)? as usize;
        let type_off = le_u32(data, 8)? as usize;
        let type_len = le_u32(data, 12)? as usize;
        let str_off = le_u32(data, 16)? as usize;
        let str_len = le_u32(data, 20)? as usize;
        let type_start = hdr_len + type_off;
        let str_start = hdr_len + str_off;
        let type_data = data
            .get(type_start..type_start + type_len)
            .ok_or_else(|| BtfError::Malformed("type section out of bounds".into()))?;
        let strings = data
            .get(str_start..str_start + str_len)
            .ok_or_else(|| BtfError::Malformed("string section out of bounds".into()))?
            .to_vec();

        // Type id 0 is void.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            array: None,
            members: Vec::new(),
            enumerators: Vec::new(),
        }];
        let mut c = Cursor {
            data: type_data,
            pos: 0,
        };
        while c.pos < type_data.len() {
            let name = c.u32()?;
            let info = c.u32()?;
            let size_or_type = c.u32()?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut t = Type {
                name,
                kind,
                size_or_type,
                array: None,
                members: Vec::new(),
                enumerators: Vec::new(),
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => c.skip(4)?,
                KIND_ARRAY => {
                    let elem = c.u32()?;
                    let _index = c.u32()?;
                    let n = c.u32()?;
                    t.array = Some((elem, n));
                }
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let name = c.u32()?;
                        let ty = c.u32()?;
                        let off = c.u32()?;
                        let (bit_offset, bitfield) = if kind_flag {
                            (off & 0x00ff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        t.members.push(Member {
                            name,
                            ty,
                            bit_offset,
                            bitfield,
                        });
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        let name = c.u32()?;
                        let raw = c.u32()?;
                        // kind_flag: the enum is signed.
                        let value = if kind_flag {
                            i64::from(raw as i32)
                        } else {
                            i64::from(raw)
                        };
                        t.enumerators.push((name, value));
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let name = c.u32()?;
                        let lo = c.u32()?;
                        let hi = c.u32()?;
                        let value = ((u64::from(hi) << 32) | u64::from(lo)) as i64;
                        t.enumerators.push((name, value));
                    }
                }
                KIND_FUNC_PROTO => c.skip(8 * vlen)?,
                KIND_DATASEC => c.skip(12 * vlen)?,
                _ => {}
            }
            types.push(t);
        }

        let mut btf = Btf {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.string(t.name).to_string();
                btf.structs_by_name.entry(name).or_default().push(id as u32);
            }
        }
        Ok(btf)
    }

    /// The enumerators (name, value) of `enum name`; an error naming the
    /// enum when this BTF has none of that name.
    pub fn enumerators(&self, name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        let t = self
            .types
            .iter()
            .find(|t| {
                (t.kind == KIND_ENUM || t.kind == KIND_ENUM64)
                    && !t.enumerators.is_empty()
                    && self.string(t.name) == name
            })
            .ok_or_else(|| BtfError::NoEnum(name.to_string()))?;
        Ok(t.enumerators
            .iter()
            .map(|(n, v)| (self.string(*n).to_string(), *v))
            .collect())
    }

    fn string(&self, off: u32) -> &str {
        let start = off as usize;
        let Some(rest) = self.strings.get(start..) else {
            return "";
        };
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| BtfError::Malformed(format!("type id {id} out of range")))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed(format!(
            "type chain from id {id} too long"
        )))
    }

    fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let id = self.resolve(id)?;
        let t = self.ty(id)?;
        Ok(match t.kind {
            KIND_PTR => 8,
            KIND_ARRAY => {
                let (elem, n) = t.array.unwrap_or((0, 0));
                self.size_of(elem)? * n
            }
            _ => t.size_or_type,
        })
    }

    /// Finds member `name` in struct/union `id`, looking through anonymous
    /// members; returns its bit offset and type.
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: u32,
    ) -> Result<Option<(u32, &Member)>, BtfError> {
        if depth > 8 {
            return Ok(None);
        }
        let t = self.ty(self.resolve(id)?)?;
        for m in &t.members {
            if m.name != 0 {
                if self.string(m.name) == name {
                    return Ok(Some((m.bit_offset, m)));
                }
            } else if let Some((off, found)) = self.find_member(m.ty, name, depth + 1)? {
                return Ok(Some((m.bit_offset + off, found)));
            }
        }
        Ok(None)
    }

    /// Offset and size of `path` (`member.member...`) inside struct `strukt`.
    pub fn member(&self, strukt: &str, path: &str) -> Result<MemberInfo, BtfError> {
        let candidates = self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        // Forward declarations have no members; take the full definition.
        let mut id = candidates
            .iter()
            .copied()
            .find(|id| {
                self.types
                    .get(*id as usize)
                    .is_some_and(|t| !t.members.is_empty())
            })
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let mut bits = 0u32;
        let mut current = strukt.to_string();
        let mut last: Option<&Member> = None;
        for part in path.split('.') {
            let (off, m) = self
                .find_member(id, part, 0)?
                .ok_or_else(|| BtfError::NoMember {
                    strukt: current.clone(),
                    member: part.to_string(),
                    path: format!("{strukt}.{path}"),
                })?;
            bits += off;
            id = m.ty;
            current = part.to_string();
            last = Some(m);
        }
        let m = last.ok_or_else(|| BtfError::NoMember {
            strukt: strukt.to_string(),
            member: String::new(),
            path: path.to_string(),
        })?;
        if m.bitfield != 0 || !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield(format!("{strukt}.{path}")));
        }
        Ok(MemberInfo {
            offset: bits / 8,
            size: self.size_of(m.ty)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF for `struct outer { int a; union { int b; int c; }; struct inner s; }`
    /// with `struct inner { long x; int y; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0long\0outer\0a\0b\0c\0inner\0s\0x\0y\0";
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .unwrap_or(0)
        };
        let mut t: Vec<u32> = Vec::new();
        // 1: int (4 bytes)
        t.extend([s("int"), KIND_INT << 24, 4, 32]);
        // 2: long (8 bytes)
        t.extend([s("long"), KIND_INT << 24, 8, 64]);
        // 3: anonymous union { int b; int c; }
        t.extend([0, (KIND_UNION << 24) | 2, 4, s("b"), 1, 0, s("c"), 1, 0]);
        // 4: struct inner { long x; int y; }
        t.extend([
            s("inner"),
            (KIND_STRUCT << 24) | 2,
            16,
            s("x"),
            2,
            0,
            s("y"),
            1,
            64,
        ]);
        // 5: struct outer { int a; union; struct inner s; }
        t.extend([
            s("outer"),
            (KIND_STRUCT << 24) | 3,
            24,
            s("a"),
            1,
            0,
            0,
            3,
            32,
            s("s"),
            4,
            64,
        ]);
        let types: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend(MAGIC.to_le_bytes());
        out.extend([1u8, 0]);
        out.extend(24u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((types.len() as u32).to_le_bytes());
        out.extend((types.len() as u32).to_le_bytes());
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_nested_and_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(
            btf.member("outer", "a").unwrap(),
            MemberInfo { offset: 0, size: 4 }
        );
        assert_eq!(
            btf.member("outer", "c").unwrap(),
            MemberInfo { offset: 4, size: 4 }
        );
        assert_eq!(
            btf.member("outer", "s.y").unwrap(),
            MemberInfo {
                offset: 16,
                size: 4
            }
        );
        assert_eq!(
            btf.member("outer", "s").unwrap(),
            MemberInfo {
                offset: 8,
                size: 16
            }
        );
    }

    #[test]
    fn names_what_is_missing() {
        let btf = Btf::parse(&sample()).unwrap();
        let e = btf.member("outer", "s.z").unwrap_err().to_string();
        assert!(e.contains("`inner`") || e.contains("`s`"), "{e}");
        assert!(e.contains("`z`"), "{e}");
        assert!(matches!(
            btf.member("nope", "a"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut truncated = sample();
        truncated.truncate(60);
        assert!(Btf::parse(&truncated).is_err());
    }

    #[test]
    fn running_kernel_has_what_the_receiver_needs() {
        // The real kernel's BTF; it exists on every machine flowscope runs on.
        let btf = Btf::from_sys_fs().expect("/sys/kernel/btf/vmlinux");
        let d = btf.member("sock", "__sk_common.skc_daddr").unwrap();
        assert_eq!(d.size, 4);
        let fam = btf.member("sock", "__sk_common.skc_family").unwrap();
        assert_eq!(fam.size, 2);
        assert_eq!(btf.member("tcp_sock", "srtt_us").unwrap().size, 4);
        assert_eq!(btf.member("net", "ns.inum").unwrap().size, 4);
    }
}
