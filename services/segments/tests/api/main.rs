//! The segments service through HTTP: every scenario runs on SQLite and, when `DATABASE_URL`
//! is set, again on a fresh MySQL / MariaDB database (skipped with a printed reason otherwise,
//! a failure under `CHATMESH_REQUIRE_BACKENDS=1`).

mod access;
mod cli;
#[cfg(feature = "dmn")]
mod dmn;
mod flags;
mod helpers;
mod legacy;
mod replicas;
mod v1;

/// Declares each scenario `module::name` as `sqlite::module::name` and `mysql::module::name`.
macro_rules! on_every_backend {
    ($($(#[$attr:meta])* $module:ident: [$($name:ident),* $(,)?]);* $(;)?) => {
        mod sqlite {
            $($(#[$attr])* mod $module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let app = crate::helpers::spawn(crate::helpers::Backend::Sqlite, stringify!($name))
                            .await
                            .expect("sqlite app");
                        crate::$module::$name(&app).await;
                    }
                )*
            })*
        }
        mod mysql {
            $($(#[$attr])* mod $module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let test = concat!("mysql::", stringify!($module), "::", stringify!($name));
                        if let Some(app) = crate::helpers::spawn(crate::helpers::Backend::MySql, test).await {
                            crate::$module::$name(&app).await;
                        }
                    }
                )*
            })*
        }
    };
}

on_every_backend! {
    legacy: [
        seed_000_examples,
        legacy_errors_change_nothing,
        ttl_expiry_without_sleeping,
        ttl_refresh_and_expired_re_add,
        deleting_a_segment_ends_its_memberships,
        percent_assignment_is_stable_and_proportional,
        unleash_vectors_through_http,
        bad_input_is_never_a_500,
        long_change_lists,
        invalid_utf8_paths_are_json_errors,
        history_keeps_the_slug_of_its_time,
    ];
    v1: [
        seed_002_examples,
        seed_002_rule_examples,
        authentication_and_permissions,
        minted_keys_without_an_admin_token,
        validation_errors,
        pagination,
        every_simple_operator,
        userid_groups_and_missing_attributes,
        evaluation_reasons_and_patch_applies_at_once,
        invalid_utf8_paths_are_json_api_errors,
        the_reserved_key_is_refused,
        a_patch_cannot_blank_the_name,
        v1_fallbacks_are_json_api,
    ];
    #[cfg(feature = "dmn")]
    dmn: [
        first_hit_policy,
        unique_hit_policy,
        collect_hit_policy,
        object_and_truthy_outputs,
        stored_decisions,
        invalid_models_are_refused,
        compiled_once_per_version,
    ];
    flags: [
        flags_target_segments,
        deleting_a_segment_in_use_is_a_conflict,
        flag_validation_and_permissions,
    ];
    cli: [
        mint_key_subcommand,
    ];
    access: [
        legacy_routes_need_a_credential,
        the_open_setting_reopens_the_legacy_routes,
        history_links_are_signed,
        history_paths_never_reach_a_file,
        revoked_keys_are_refused_everywhere_within_a_second,
    ];
    replicas: [
        changes_reach_every_process_within_a_second,
    ];
}

/// Upgrades from a store an older version wrote: each sets the store up itself.
mod upgrades {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_history_from_before_the_slug_column() {
        crate::legacy::history_from_before_the_slug_column(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_history_from_before_the_slug_column() {
        crate::legacy::history_from_before_the_slug_column(Backend::MySql).await;
    }
}

#[test]
fn binary_help_names_the_subcommands() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_segments")).arg("--help").output().expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("mint-key") && help.contains("revoke-key"), "{help}");
    assert!(help.contains("8083"), "{help}");
    assert!(help.contains("DATABASE_URL"), "{help}");
}
