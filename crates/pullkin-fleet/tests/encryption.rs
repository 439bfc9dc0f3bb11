//! Credentials at rest: a dump of the database shows no secret, a wrong key is a clear
//! error, a row copied to another identity does not open, the key rotates in one step.

use crate::support::{TestDb, credentials, key};
use pullkin_fleet::{
    FleetError, FleetKey, add_identity, list_identities, load_credentials, rotate_key,
};

/// Every row of every table of the schema, as text (bytea as hex).
async fn dump(test: &TestDb) -> String {
    let client = test.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'pullkin'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut dump = String::new();
    for table in tables {
        for row in client
            .query(&format!("SELECT t::text FROM pullkin.{table} t"), &[])
            .await
            .unwrap()
        {
            let line: String = row.get(0);
            dump.push_str(&line);
            dump.push('\n');
        }
    }
    dump
}

#[tokio::test]
async fn a_dump_of_the_database_reveals_no_secret() {
    let test = TestDb::migrated().await;
    let key = key();
    let mut secrets = vec![key.to_hex().to_string()];
    for n in 1..=3 {
        let credentials = credentials(4_000_000_000 + n);
        secrets.push(credentials.keys.private.expose().clone());
        secrets.push(credentials.keys.secret.expose().clone());
        secrets.push(credentials.gcm.token.as_str().to_owned());
        secrets.push(credentials.gcm.security_token.expose().to_string());
        add_identity(&test.db, &key, &format!("id-{n}"), &credentials)
            .await
            .unwrap();
    }
    let dump = dump(&test).await;
    assert!(dump.contains("id-1"), "the dump has the rows: {dump}");
    for secret in &secrets {
        assert!(!dump.contains(secret.as_str()), "{secret} is in the dump");
        // Nor as the hex of a bytea holding it in plain text.
        let as_hex = hex::encode(secret.as_bytes());
        assert!(!dump.contains(&as_hex), "{secret} is in the dump as hex");
    }
    // The JSON's field names would show in a plaintext bytea too.
    assert!(!dump.contains(&hex::encode("security_token")));
}

#[tokio::test]
async fn a_wrong_key_is_named_and_a_copied_row_does_not_open() {
    let test = TestDb::migrated().await;
    let key = key();
    let first = add_identity(&test.db, &key, "first", &credentials(11))
        .await
        .unwrap();
    let second = add_identity(&test.db, &key, "second", &credentials(12))
        .await
        .unwrap();
    assert_eq!(
        load_credentials(&test.db, &key, "first")
            .await
            .unwrap()
            .gcm
            .android_id,
        11
    );

    let error = load_credentials(&test.db, &FleetKey::generate(), "first")
        .await
        .unwrap_err();
    assert!(matches!(error, FleetError::BadKey { identity } if identity == first));
    assert_eq!(
        error.to_string(),
        format!("the fleet key does not open identity {first} (wrong key?)")
    );

    // The sealed credentials of `first` copied onto `second`: bound to their id, they fail.
    let client = test.client().await;
    client
        .execute(
            "UPDATE pullkin.identities SET (credentials, nonce) =
                 (SELECT credentials, nonce FROM pullkin.identities WHERE id = $1)
             WHERE id = $2",
            &[&first, &second],
        )
        .await
        .unwrap();
    let error = load_credentials(&test.db, &key, "second")
        .await
        .unwrap_err();
    assert!(matches!(error, FleetError::BadKey { identity } if identity == second));
}

#[tokio::test]
async fn rotating_the_key_reencrypts_every_row_at_once() {
    let test = TestDb::migrated().await;
    let old = key();
    let new = key();
    for n in 1..=4 {
        add_identity(&test.db, &old, &format!("r{n}"), &credentials(20 + n))
            .await
            .unwrap();
    }
    let before = dump(&test).await;

    // A key that opens nothing: nothing changes.
    let error = rotate_key(&test.db, &FleetKey::generate(), &new)
        .await
        .unwrap_err();
    assert!(matches!(error, FleetError::BadKey { .. }), "{error:?}");
    assert_eq!(dump(&test).await, before);

    assert_eq!(rotate_key(&test.db, &old, &new).await.unwrap(), 4);
    for n in 1..=4 {
        let name = format!("r{n}");
        assert_eq!(
            load_credentials(&test.db, &new, &name)
                .await
                .unwrap()
                .gcm
                .android_id,
            20 + n
        );
        assert!(matches!(
            load_credentials(&test.db, &old, &name).await,
            Err(FleetError::BadKey { .. })
        ));
    }
    assert!(
        list_identities(&test.db)
            .await
            .unwrap()
            .iter()
            .all(|i| i.key_id == new.id())
    );
    // Again: already done.
    assert_eq!(rotate_key(&test.db, &old, &new).await.unwrap(), 0);
}

#[tokio::test]
async fn names_are_unique() {
    let test = TestDb::migrated().await;
    let key = key();
    add_identity(&test.db, &key, "twice", &credentials(1))
        .await
        .unwrap();
    let error = add_identity(&test.db, &key, "twice", &credentials(2))
        .await
        .unwrap_err();
    assert!(matches!(error, FleetError::IdentityExists(ref name) if name == "twice"));
    assert!(
        pullkin_fleet::remove_identity(&test.db, "twice")
            .await
            .unwrap()
    );
    assert!(
        !pullkin_fleet::remove_identity(&test.db, "twice")
            .await
            .unwrap()
    );
}

#[test]
fn the_key_file_is_read_from_the_environment_variable_s_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.key");
    let key = FleetKey::generate();
    std::fs::write(&path, key.to_hex().as_bytes()).unwrap();
    assert_eq!(FleetKey::from_file(&path).unwrap().id(), key.id());
    std::fs::write(&path, b"nope").unwrap();
    let error = FleetKey::from_file(&path).unwrap_err();
    assert!(error.to_string().contains("64 hex characters"), "{error}");
    let missing = FleetKey::from_file(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(missing, FleetError::KeyFile { .. }));
}
