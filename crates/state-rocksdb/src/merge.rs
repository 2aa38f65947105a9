//! The list merge operator.
//!
//! List state is stored in the list encoding of [`state_api::codec`]: each
//! element is `varint(len) ++ bytes`, a list is the concatenation of its
//! elements. Appending is therefore plain concatenation, which is
//! associative, so one function serves as full and partial merge. Unlike
//! Flink's `,`-delimited "stringappendtest" operator, elements may hold any
//! bytes and nothing has to be escaped.

use rocksdb::MergeOperands;

/// Name under which the operator is registered (recorded in OPTIONS files).
pub(crate) const NAME: &str = "state-list-concat";

/// Concatenates the existing value (if any) and the operands, in order.
pub(crate) fn concat(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    if let Some(existing) = existing {
        out.extend_from_slice(existing);
    }
    for operand in operands {
        out.extend_from_slice(operand);
    }
    Some(out)
}
