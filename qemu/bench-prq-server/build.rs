//! Links the task with the shared task linker script (see sys/build-util).
fn main() {
    build_util::task_link();
}
