//! The backend's event bus.

use crate::event::{Audience, Delivery, Event, Except};
use crate::types::{Names, RoomId};

use super::Fixture;

/// The backend's bus delivers what is published to a subscribed audience, with its exceptions.
pub async fn bus_delivers_published_events(fx: Fixture) {
    let a = fx.phone(1);
    let room = RoomId::generate();
    let user = Audience::User(a.clone());
    let in_room = Audience::Room(room);
    fx.bus.subscribe(user.clone()).await.expect("subscribe");
    fx.bus.subscribe(in_room.clone()).await.expect("subscribe");
    let presence = Event::Presence {
        phone: fx.phone(2),
        online: true,
        names: Names::from([(fx.phone(2), "Ben".to_owned())]),
    };
    let typing = Delivery::to_room(
        room,
        Event::Typing {
            room,
            user: a.clone(),
            typing: true,
        },
    )
    .except(Except::User(a.clone()));
    fx.bus
        .publish(Delivery::to_user(a.clone(), presence.clone()))
        .await
        .expect("publish");
    fx.bus.publish(typing.clone()).await.expect("publish");
    assert_eq!(fx.wait_for_events(&user, 1).await, vec![presence]);
    fx.wait_for_events(&in_room, 1).await;
    let got: Vec<Delivery> = fx
        .events
        .take()
        .into_iter()
        .filter(|d| d.audience == in_room)
        .collect();
    assert_eq!(got, vec![typing], "the exception travels with the event");
    fx.bus.unsubscribe(user).await.expect("unsubscribe");
    fx.bus.unsubscribe(in_room).await.expect("unsubscribe");
}
