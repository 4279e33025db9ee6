//! docs/profile.md's table of the built-in profile says what the code does: every function
//! with its role, lock contract and mdev argument, and nothing else.

use std::collections::BTreeMap;

use tracer::profile::Profile;

fn kebab<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_documented_table_is_the_builtin_profile() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/profile.md"))
        .unwrap();
    let table = doc
        .split("## The built-in vfio_ap profile")
        .nth(1)
        .expect("the section of the built-in profile");
    let documented: BTreeMap<String, (String, String, String)> = table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_string(),
                (
                    cells[2].to_string(),
                    cells[3].to_string(),
                    cells[4].to_string(),
                ),
            )
        })
        .collect();
    let built_in: BTreeMap<String, (String, String, String)> = Profile::vfio_ap()
        .functions
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                (kebab(&f.role), kebab(&f.lock), kebab(&f.mdev)),
            )
        })
        .collect();
    assert_eq!(
        documented, built_in,
        "docs/profile.md's table against Profile::vfio_ap()"
    );
}
