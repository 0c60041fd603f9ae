//! A tiny MaxMind DB writer for tests: an IPv4 ASN database (the
//! `autonomous_system_number` / `autonomous_system_organization` records of
//! GeoLite2-ASN and DB-IP ASN) with a few networks, in the format of the
//! MaxMind DB File Format Specification 2.0: a binary search tree of
//! 24-bit records, 16 zero bytes, the data section, then the metadata
//! after the `\xAB\xCD\xEFMaxMind.com` marker.

/// Control byte and size of a field of `type_` (1..=15) and `size`.
fn head(out: &mut Vec<u8>, type_: u8, size: usize) {
    let (t, ext) = if type_ <= 7 {
        (type_ << 5, None)
    } else {
        (0, Some(type_ - 7))
    };
    assert!(size < 285, "tests write short fields only");
    // Sizes of 29 and more: 29 in the control byte, the rest in the byte
    // after the type's extension.
    out.push(t | size.min(29) as u8);
    if let Some(e) = ext {
        out.push(e);
    }
    if size >= 29 {
        out.push((size - 29) as u8);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    head(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// An unsigned integer of type 5 (uint16), 6 (uint32) or 9 (uint64).
fn uint(out: &mut Vec<u8>, type_: u8, v: u64) {
    let bytes: Vec<u8> = v
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    head(out, type_, bytes.len());
    out.extend_from_slice(&bytes);
}

/// The `.mmdb` bytes of `networks`: `(a.b.c.d, prefix length, AS number,
/// AS organisation)`.
pub fn asn_v4(networks: &[([u8; 4], u8, u32, &str)]) -> Vec<u8> {
    // Data section: one record per network.
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (_, _, asn, org) in networks {
        offsets.push(data.len());
        head(&mut data, 7, 2);
        string(&mut data, "autonomous_system_number");
        uint(&mut data, 6, u64::from(*asn));
        string(&mut data, "autonomous_system_organization");
        string(&mut data, org);
    }
    // Search tree: node 0 is the root; a record is a node, "no data"
    // (node_count) or data (node_count + 16 + offset), known once the node
    // count is.
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (i, (net, len, _, _)) in networks.iter().enumerate() {
        let bits = u32::from_be_bytes(*net);
        let mut node = 0;
        for depth in 0..*len {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *len {
                nodes[node][bit] = Rec::Data(offsets[i]);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(x) => x,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    head(&mut out, 7, 9);
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    uint(&mut out, 9, 1_700_000_000);
    string(&mut out, "database_type");
    string(&mut out, "flowscope-test-ASN");
    string(&mut out, "description");
    head(&mut out, 7, 1);
    string(&mut out, "en");
    string(&mut out, "test ASN database");
    string(&mut out, "ip_version");
    uint(&mut out, 5, 4);
    string(&mut out, "languages");
    head(&mut out, 11, 1);
    string(&mut out, "en");
    string(&mut out, "node_count");
    uint(&mut out, 6, count as u64);
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    out
}
