//! Tasks: listed newest first with exact filters, claimed exactly once,
//! completed under the completion rule.

use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

fn new_task(
    mesh: &Mesh,
    by: &Member,
    title: &str,
    assignee: Option<&str>,
    at: DateTime<Utc>,
) -> Task {
    Task {
        id: new_message_id(at),
        mesh_id: mesh.id.clone(),
        title: title.into(),
        assignee: assignee.map(Into::into),
        priority: "normal".into(),
        status: TaskStatus::Open,
        tags: vec!["t".into()],
        created_by: by.display_name.clone(),
        created_by_member: by.id.clone(),
        claimed_by: None,
        claimed_by_member: None,
        created_at: at,
        result: None,
    }
}

fn actor(m: &Member, privileged: bool) -> TaskActor<'_> {
    TaskActor {
        member_id: &m.id,
        name: &m.display_name,
        privileged,
    }
}

async fn tasks_are_listed_newest_first_with_exact_filters(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let other = mesh(s, "o").await;
    let alice = member(s, &m, "alice").await;
    assert!(s
        .list_tasks(&m.id, None, None, 100)
        .await
        .unwrap()
        .is_empty());
    let a = new_task(&m, &alice, "a", Some("bob"), t0());
    let b = new_task(&m, &alice, "b", None, t0());
    let c = new_task(&m, &alice, "c", Some("bob"), t0() + secs(1));
    for t in [&a, &b, &c] {
        s.create_task(t).await.unwrap();
    }
    let titles = |ts: Vec<Task>| ts.into_iter().map(|t| t.title).collect::<Vec<_>>();
    assert_eq!(
        titles(s.list_tasks(&m.id, None, None, 100).await.unwrap()),
        ["c", "b", "a"]
    );
    assert_eq!(
        titles(s.list_tasks(&m.id, None, None, 2).await.unwrap()),
        ["c", "b"]
    );
    assert_eq!(
        titles(s.list_tasks(&m.id, None, Some("bob"), 100).await.unwrap()),
        ["c", "a"]
    );
    assert!(s
        .list_tasks(&m.id, Some("done"), None, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .list_tasks(&other.id, None, None, 100)
        .await
        .unwrap()
        .is_empty());
    let listed = s.list_tasks(&m.id, None, None, 100).await.unwrap();
    assert_eq!(listed[2], a, "stored as given");
}

async fn a_task_is_claimed_once_and_completed_by_whom_the_rule_allows(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob, carol) = (
        member(s, &m, "alice").await,
        member(s, &m, "bob").await,
        member(s, &m, "carol").await,
    );
    let t = new_task(&m, &alice, "t", None, t0());
    s.create_task(&t).await.unwrap();
    assert_eq!(
        s.claim_task(&m.id, Uuid::now_v7(), actor(&bob, false))
            .await
            .unwrap(),
        TaskClaim::NotClaimable
    );
    assert_eq!(
        s.claim_task("other", t.id, actor(&bob, false))
            .await
            .unwrap(),
        TaskClaim::NotClaimable
    );
    assert_eq!(
        s.claim_task(&m.id, t.id, actor(&bob, false)).await.unwrap(),
        TaskClaim::Won
    );
    assert_eq!(
        s.claim_task(&m.id, t.id, actor(&carol, false))
            .await
            .unwrap(),
        TaskClaim::NotClaimable
    );
    let got = &s.list_tasks(&m.id, None, None, 10).await.unwrap()[0];
    assert_eq!(
        (got.status, got.claimed_by.as_deref()),
        (TaskStatus::Claimed, Some("bob"))
    );
    assert_eq!(s.count_tasks(&m.id).await.unwrap(), (0, 1, 0));
    assert_eq!(s.count_tasks("other").await.unwrap(), (0, 0, 0));
    // Claimed: carol may not complete it; its claimer, creator or a
    // privileged member may, again and again.
    assert_eq!(
        s.complete_task(&m.id, t.id, actor(&carol, false), Some("no"))
            .await
            .unwrap(),
        TaskCompletion::Forbidden
    );
    assert_eq!(
        s.list_tasks(&m.id, None, None, 10).await.unwrap()[0].result,
        None,
        "nothing written"
    );
    for (who, privileged, result) in [
        (&bob, false, "r1"),
        (&alice, false, "r2"),
        (&carol, true, "r3"),
    ] {
        assert_eq!(
            s.complete_task(&m.id, t.id, actor(who, privileged), Some(result))
                .await
                .unwrap(),
            TaskCompletion::Done
        );
        let got = &s.list_tasks(&m.id, None, None, 10).await.unwrap()[0];
        assert_eq!(
            (got.status, got.result.as_deref()),
            (TaskStatus::Done, Some(result))
        );
    }
    assert_eq!(
        s.complete_task(&m.id, Uuid::now_v7(), actor(&alice, true), None)
            .await
            .unwrap(),
        TaskCompletion::NotFound
    );
    // An open task: anyone may complete it.
    let open = new_task(&m, &alice, "open", None, t0());
    s.create_task(&open).await.unwrap();
    assert_eq!(
        s.complete_task(&m.id, open.id, actor(&carol, false), None)
            .await
            .unwrap(),
        TaskCompletion::Done
    );
    assert_eq!(
        s.claim_task(&m.id, open.id, actor(&bob, false))
            .await
            .unwrap(),
        TaskClaim::NotClaimable,
        "done is not open"
    );
    s.create_task(&new_task(&m, &alice, "fresh", None, t0()))
        .await
        .unwrap();
    assert_eq!(s.count_tasks(&m.id).await.unwrap(), (1, 0, 2));
}

async fn racing_claims_have_one_winner(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let t = new_task(&m, &alice, "t", None, t0());
    s.create_task(&t).await.unwrap();
    let claims = (0..16).map(|_| s.claim_task(&m.id, t.id, actor(&alice, false)));
    let results = futures_util::future::join_all(claims).await;
    let won = results
        .iter()
        .filter(|r| matches!(r, Ok(TaskClaim::Won)))
        .count();
    assert_eq!(won, 1, "{results:?}");
}

crate::conformance!(
    tasks_are_listed_newest_first_with_exact_filters,
    a_task_is_claimed_once_and_completed_by_whom_the_rule_allows,
    racing_claims_have_one_winner,
);
