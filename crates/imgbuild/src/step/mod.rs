//! The build's steps, one module each, every one a function of its inputs; `build::build`
//! runs them in order under its `[n/N] step` progress lines.

pub mod esp;
pub mod fetch;
pub mod image;
pub mod record;
pub mod resolve;
pub mod rootfs;
pub mod slot;
pub mod zfs_modules;

/// The keys a build signs and trusts with.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// Signs the slot's verity descriptor and the update artifact.
    pub signing: &'a crate::keys::Signing,
    /// The update keys the image trusts.
    pub trusted: &'a abupdate::trust::KeyList,
    /// A rotation the update artifact carries.
    pub rotation: Option<&'a abupdate::trust::SignedKeyList>,
    /// The Secure Boot set: signs shim, GRUB, the kernel, its modules and GRUB's files.
    pub boot: &'a crate::secureboot::BootKeys,
    /// The operator CAs the management API trusts.
    pub mgmt: &'a crate::mgmtca::MgmtCa,
}
