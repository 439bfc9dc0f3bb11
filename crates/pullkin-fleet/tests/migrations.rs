//! Migrations: a fresh database, a second run, an upgrade from version 1, a database
//! newer than the build.

use crate::support::TestDb;
use pullkin_fleet::{
    FleetError, SCHEMA_VERSION, check_schema, migrate, migrate_to, schema_version,
};

async fn tables(test: &TestDb) -> Vec<String> {
    let client = test.client().await;
    client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'pullkin' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn a_fresh_database_gets_every_table_and_a_rerun_changes_nothing() {
    let test = TestDb::empty().await;
    assert_eq!(schema_version(&test.db).await.unwrap(), 0);
    assert!(matches!(
        check_schema(&test.db).await,
        Err(FleetError::WrongSchema { database: 0, .. })
    ));
    let migrated = migrate(&test.db).await.unwrap();
    assert_eq!((migrated.from, migrated.to), (0, SCHEMA_VERSION));
    assert_eq!(
        tables(&test).await,
        [
            "ack_state",
            "connection_state",
            "consumers",
            "identities",
            "leases",
            "notifications",
            "schema_migrations",
            "workers"
        ]
    );
    check_schema(&test.db).await.unwrap();

    let again = migrate(&test.db).await.unwrap();
    assert_eq!(again.from, SCHEMA_VERSION);
    assert_eq!(again.to, SCHEMA_VERSION);
    let client = test.client().await;
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM pullkin.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, i64::from(SCHEMA_VERSION));
}

#[tokio::test]
async fn version_1_upgrades_to_the_newest_keeping_its_rows() {
    let test = TestDb::empty().await;
    assert_eq!(migrate_to(&test.db, 1).await.unwrap().to, 1);
    assert!(!tables(&test).await.contains(&"connection_state".to_owned()));
    let key = crate::support::key();
    let id = pullkin_fleet::add_identity(&test.db, &key, "kept", &crate::support::credentials(1))
        .await
        .unwrap();

    let migrated = migrate(&test.db).await.unwrap();
    assert_eq!((migrated.from, migrated.to), (1, SCHEMA_VERSION));
    assert!(tables(&test).await.contains(&"connection_state".to_owned()));
    let client = test.client().await;
    let indexes: Vec<String> = client
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'pullkin' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        indexes.contains(&"notifications_identity_seq".to_owned()),
        "{indexes:?}"
    );
    let credentials = pullkin_fleet::load_credentials(&test.db, &key, "kept")
        .await
        .unwrap();
    assert_eq!(credentials.gcm.android_id, 1);
    assert!(id > 0);
}

#[tokio::test]
async fn concurrent_migrations_apply_each_version_once() {
    let test = TestDb::empty().await;
    let (a, b, c) = tokio::join!(migrate(&test.db), migrate(&test.db), migrate(&test.db));
    let results = [a.unwrap(), b.unwrap(), c.unwrap()];
    // Exactly one of them did the work; the others found it done.
    assert_eq!(
        results.iter().filter(|m| m.from == 0).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|m| m.to == SCHEMA_VERSION));
}

#[tokio::test]
async fn a_database_newer_than_the_build_is_refused() {
    let test = TestDb::migrated().await;
    let client = test.client().await;
    client
        .execute(
            "INSERT INTO pullkin.schema_migrations (version) VALUES ($1)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let error = migrate(&test.db).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "wrong schema version: database {}, this build {SCHEMA_VERSION}",
            SCHEMA_VERSION + 1
        )
    );
    assert!(matches!(
        check_schema(&test.db).await,
        Err(FleetError::WrongSchema { .. })
    ));
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    // A port nothing listens on.
    let db = pullkin_fleet::Database::builder("postgres://postgres@127.0.0.1:1/test")
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    let error = migrate(&db).await.unwrap_err();
    assert!(error.is_unreachable(), "{error:?}");
    assert!(
        error.to_string().starts_with("cannot reach the database"),
        "{error}"
    );
    assert!(!error.to_string().contains('\n'));
}

#[tokio::test]
async fn sslmode_chooses_tls() {
    let plain = pullkin_fleet::Database::connect("postgres://u@localhost/db").unwrap();
    assert!(!plain.uses_tls());
    let disabled =
        pullkin_fleet::Database::connect("postgres://u@localhost/db?sslmode=disable").unwrap();
    assert!(!disabled.uses_tls());
    let required =
        pullkin_fleet::Database::connect("postgres://u@localhost/db?sslmode=require").unwrap();
    assert!(required.uses_tls());
    let error =
        pullkin_fleet::Database::connect("postgres://u@localhost/db?sslmode=bogus").unwrap_err();
    assert!(matches!(error, FleetError::BadUrl { .. }), "{error:?}");
    // The password never shows in Debug.
    let secret = pullkin_fleet::Database::connect("postgres://u:hunter2@localhost/db").unwrap();
    assert!(!format!("{secret:?}").contains("hunter2"));
}

#[tokio::test]
async fn a_worker_refuses_a_schema_newer_than_it_knows() {
    let test = TestDb::migrated().await;
    test.client()
        .await
        .execute(
            "INSERT INTO pullkin.schema_migrations (version) VALUES ($1)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    for migrate in [true, false] {
        let worker = pullkin_fleet::Worker::builder(&test.db, crate::support::key())
            .migrate(migrate)
            .build()
            .unwrap();
        let error = worker.run(std::future::pending()).await.unwrap_err();
        assert!(
            matches!(error, FleetError::WrongSchema { database, build }
                if database == SCHEMA_VERSION + 1 && build == SCHEMA_VERSION),
            "{error:?}"
        );
    }
    // Nor does it register itself.
    let workers: i64 = test
        .client()
        .await
        .query_one("SELECT count(*) FROM pullkin.workers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(workers, 0);
}

#[tokio::test]
async fn a_database_error_is_one_line_with_its_detail() {
    let test = TestDb::migrated().await;
    let client = test.db.pool().get().await.unwrap();
    let error: FleetError = client
        .execute(
            "INSERT INTO pullkin.consumers (name) VALUES ('a'), ('a')",
            &[],
        )
        .await
        .unwrap_err()
        .into();
    let text = error.to_string();
    assert!(!text.contains('\n'), "{text:?}");
    assert!(text.starts_with("database: "), "{text}");
    assert!(
        text.contains("already exists"),
        "the detail is kept: {text}"
    );
}
