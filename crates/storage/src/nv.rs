//! The rollback floor's NV indexes in the TPM ([`platform::rollback`] says what they mean):
//! found, checked to be the box's own, read, defined, incremented and the origin record written.
//! What the floor is raised to, and when, is [`crate::floor`]'s; the seals read it through here.

use crate::tpmerr::{tss, TpmError};
use platform::rollback;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::NvIndexType;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::structures::{MaxNvBuffer, NvPublicBuilder};
use tss_esapi::Context;

pub(crate) fn handle(ctx: &mut Context, index: u32) -> Result<Option<NvIndexHandle>, TpmError> {
    let h = NvIndexTpmHandle::new(index).map_err(tss("NV index handle"))?;
    Ok(ctx
        .tr_from_tpm_public(TpmHandle::NvIndex(h))
        .ok()
        .map(NvIndexHandle::from))
}

/// The counter at `index`, made if absent; refused if something else holds the index.
pub(crate) fn ours(ctx: &mut Context, index: u32) -> Result<(NvIndexHandle, bool), TpmError> {
    if let Some(h) = handle(ctx, index)? {
        match counter_check(ctx, h, index)? {
            Ok(written) => return Ok((h, written)),
            // Something else at the box's index (put there to pass for a low floor): removed
            // with the owner's auth, and the counter made again.
            Err(why) => {
                platform::log(format!("rollback floor: {why}; replacing it"));
                ctx.execute_with_nullauth_session(|c| c.nv_undefine_space(Provision::Owner, h))
                    .map_err(tss("NV_UndefineSpace"))?;
            }
        }
    }
    Ok((define(ctx, index, NvIndexType::Counter, 8)?, false))
}

/// Defines the box's index `index` of `kind` and `size` bytes: SHA-256 names, read and written
/// with its empty auth value, no lockout.
pub(crate) fn define(
    ctx: &mut Context,
    index: u32,
    kind: NvIndexType,
    size: usize,
) -> Result<NvIndexHandle, TpmError> {
    let attrs = NvIndexAttributesBuilder::new()
        .with_nv_index_type(kind)
        .with_auth_write(true)
        .with_auth_read(true)
        .with_no_da(true)
        .build()
        .map_err(tss("NV attributes"))?;
    let public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(index).map_err(tss("NV index handle"))?)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attrs)
        .with_data_area_size(size)
        .build()
        .map_err(tss("NV public"))?;
    ctx.execute_with_nullauth_session(|c| c.nv_define_space(Provision::Owner, None, public))
        .map_err(tss("NV_DefineSpace"))
}

/// The parts of an index's public area the box checks: (index, name algorithm, attributes,
/// policy length, data size).
pub(crate) fn public(
    ctx: &mut Context,
    h: NvIndexHandle,
) -> Result<(u32, u16, u32, usize, usize), TpmError> {
    let (p, _) = ctx.nv_read_public(h).map_err(tss("NV_ReadPublic"))?;
    let attrs: u32 =
        tss_esapi::tss2_esys::TPMA_NV::try_from(p.attributes()).map_err(tss("NV attributes"))?;
    let alg: u16 = tss_esapi::tss2_esys::TPM2_ALG_ID::from(p.name_algorithm());
    Ok((
        u32::from(p.nv_index()),
        alg,
        attrs,
        p.authorization_policy().value().len(),
        p.data_size(),
    ))
}

/// [`rollback::check_public`] of the index at `h`.
pub(crate) fn counter_check(
    ctx: &mut Context,
    h: NvIndexHandle,
    index: u32,
) -> Result<Result<bool, String>, TpmError> {
    let (i, alg, attrs, policy, size) = public(ctx, h)?;
    Ok(rollback::check_public(index, i, alg, attrs, policy, size))
}

pub(crate) fn value(ctx: &mut Context, h: NvIndexHandle) -> Result<u64, TpmError> {
    let data = ctx
        .execute_with_nullauth_session(|c| c.nv_read(NvAuth::NvIndex(h), h, 8, 0))
        .map_err(tss("NV_Read"))?;
    let b: [u8; 8] = data
        .value()
        .try_into()
        .map_err(|_| TpmError::Blob("NV counter: not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(b))
}

pub(crate) fn increment(ctx: &mut Context, h: NvIndexHandle) -> Result<u64, TpmError> {
    ctx.execute_with_nullauth_session(|c| c.nv_increment(NvAuth::NvIndex(h), h))
        .map_err(tss("NV_Increment"))?;
    value(ctx, h)
}

/// The public area at the origin index, if it is the box's ([`rollback::origin_public_ok`],
/// except that it may be unwritten).
pub(crate) fn origin_public_ours(
    ctx: &mut Context,
    h: NvIndexHandle,
) -> Result<(bool, bool), TpmError> {
    let (i, alg, attrs, policy, size) = public(ctx, h)?;
    Ok((
        rollback::origin_public_ok(i, alg, attrs | rollback::WRITTEN, policy, size),
        attrs & rollback::WRITTEN != 0,
    ))
}

/// The origin record as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// No index there: a new or cleared TPM, or a box from before the record.
    Absent,
    Ours([u64; 3]),
    /// An index that is not the box's record, never written, or unreadable with the empty auth
    /// (defined with a secret one): why. Replaced when the record is next written.
    Foreign(String),
}

impl Record {
    pub(crate) fn stage1(&self) -> Result<Option<[u64; 3]>, String> {
        match self {
            Record::Absent => Ok(None),
            Record::Ours(o) => Ok(Some(*o)),
            Record::Foreign(why) => Err(why.clone()),
        }
    }
}

pub(crate) fn record(ctx: &mut Context) -> Result<Record, TpmError> {
    let index = rollback::ORIGIN_INDEX;
    let Some(h) = handle(ctx, index)? else {
        return Ok(Record::Absent);
    };
    match origin_public_ours(ctx, h)? {
        (false, _) => {
            return Ok(Record::Foreign(format!(
                "{index:#010x} is not the box's origin record"
            )))
        }
        (true, false) => return Ok(Record::Foreign(format!("{index:#010x} was never written"))),
        (true, true) => {}
    }
    let size = rollback::ORIGIN_SIZE as u16;
    match ctx.execute_with_nullauth_session(|c| c.nv_read(NvAuth::NvIndex(h), h, size, 0)) {
        Ok(d) => Ok(rollback::decode_origins(d.value()).map_or_else(
            || Record::Foreign(format!("{index:#010x}: {} bytes", d.value().len())),
            Record::Ours,
        )),
        Err(e) => Ok(Record::Foreign(format!(
            "{index:#010x} cannot be read with the empty auth ({e})"
        ))),
    }
}

/// Writes the origin record, defining the index (after removing whatever else holds it, when
/// `replace`).
pub(crate) fn write_origins(
    ctx: &mut Context,
    o: &[u64; 3],
    replace: bool,
) -> Result<(), TpmError> {
    let index = rollback::ORIGIN_INDEX;
    let mut h = handle(ctx, index)?;
    if let (Some(old), true) = (h, replace) {
        platform::log(format!(
            "rollback floor: {index:#010x} is not the box's origin record; replacing it"
        ));
        ctx.execute_with_nullauth_session(|c| c.nv_undefine_space(Provision::Owner, old))
            .map_err(tss("NV_UndefineSpace"))?;
        h = None;
    }
    let h = match h {
        Some(h) => h,
        None => define(ctx, index, NvIndexType::Ordinary, rollback::ORIGIN_SIZE)?,
    };
    let data =
        MaxNvBuffer::try_from(rollback::encode_origins(o).to_vec()).map_err(tss("NV buffer"))?;
    ctx.execute_with_nullauth_session(|c| c.nv_write(NvAuth::NvIndex(h), h, data, 0))
        .map_err(tss("NV_Write"))
}

/// The floor as stage 1 reads it, from an open context.
pub(crate) fn floor_in(ctx: &mut Context) -> Result<rollback::Floor, TpmError> {
    let ([e, s, k], record) = raw_in(ctx)?;
    Ok(rollback::resolve(e, s, k, record))
}

pub(crate) type Raw = ([Result<u64, String>; 3], Result<Option<[u64; 3]>, String>);

/// Each counter's value (or why it cannot count) and the origin record.
pub(crate) fn raw_in(ctx: &mut Context) -> Result<Raw, TpmError> {
    let mut one = |index| -> Result<Result<u64, String>, TpmError> {
        let Some(h) = handle(ctx, index)? else {
            return Ok(Err(format!("{index:#010x}: absent")));
        };
        match counter_check(ctx, h, index)? {
            Ok(true) => Ok(Ok(value(ctx, h)?)),
            Ok(false) => Ok(Err(format!("{index:#010x} was never incremented"))),
            Err(why) => Ok(Err(why)),
        }
    };
    let e = one(rollback::EPOCH_INDEX)?;
    let s = one(rollback::SERIAL_INDEX)?;
    let k = one(rollback::BUILTIN_INDEX)?;
    let record = record(ctx)?.stage1();
    Ok(([e, s, k], record))
}

/// Pure: the rollback PCR's value when stage 1 confirmed `floor` this boot (`None`: no floor,
/// nothing to confirm).
pub fn confirmed_value(floor: &rollback::Floor) -> Option<[u8; 32]> {
    rollback::measurement_if_met(floor).map(|m| rollback::pcr_after(&m))
}
