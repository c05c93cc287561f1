//! Builds the appliance image from linuxkit/*.yml, rootfs/packages.toml and Debian packages.
pub mod apt;
pub mod build;
pub mod cmd;
pub mod cpio;
pub mod disk;
pub mod error;
pub mod grub;
pub mod keys;
pub mod kmod;
pub mod manifest;
pub mod record;
pub mod rootfs;
pub mod secureboot;
pub mod step;
pub mod update;
pub mod verity;
pub mod workspace;
