//! Generates the interface code from idl/iommu-server.idol.ron into $OUT_DIR.

fn main() {
    idl::build_api("iommu-server");
}
