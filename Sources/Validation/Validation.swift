/// Validation: runs the same I/O through QEMU and compares.
public enum Validation {}
