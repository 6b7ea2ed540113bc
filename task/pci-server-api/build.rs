//! Generates the interface code from idl/pci-server.idol.ron into $OUT_DIR.

fn main() {
    idl::build_api("pci-server");
}
