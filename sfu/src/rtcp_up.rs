//! An interceptor that hands chosen inbound RTCP packets up to the application. webrtc-rs keeps
//! RTCP with its interceptors unless one marks it [`Attribute::DeliverToApplication`]; this one does
//! that for the packets its filter keeps, and lets everything else pass on to the interceptors only.
//! The SFU wants subscribers' keyframe requests, receiver reports and NACKs, and publishers'
//! sender reports ([`RtcpToApplication::feedback`]); the load tool's publishers only keyframe requests
//! ([`RtcpToApplication::keyframe_requests`]).

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;

pub struct RtcpToApplication {
    keep: fn(&dyn rtc::rtcp::Packet) -> bool,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

fn keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
}

fn feedback(p: &dyn rtc::rtcp::Packet) -> bool {
    keyframe_request(p)
        || p.as_any().is::<ReceiverReport>()
        || p.as_any().is::<TransportLayerNack>()
        || p.as_any().is::<SenderReport>()
}

impl RtcpToApplication {
    /// Keyframe requests (PLI, FIR) only.
    pub fn keyframe_requests() -> RtcpToApplication {
        RtcpToApplication::keeping(keyframe_request)
    }

    /// Keyframe requests, receiver reports (loss after repair), NACKs (loss before repair) and
    /// publishers' sender reports (their capture clocks, for recordings).
    pub fn feedback() -> RtcpToApplication {
        RtcpToApplication::keeping(feedback)
    }

    fn keeping(keep: fn(&dyn rtc::rtcp::Packet) -> bool) -> RtcpToApplication {
        RtcpToApplication {
            keep,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let wanted: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| (self.keep)(p.as_ref()))
                .cloned()
                .collect();
            if wanted.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(wanted);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for RtcpToApplication {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::{TransportContext, TransportMessage};

    fn rtcp(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TransportMessage {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    fn kinds(msg: &TaggedPacket) -> Vec<&'static str> {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            return vec!["rtp"];
        };
        packets
            .iter()
            .map(|p| {
                let a = p.as_any();
                if a.is::<PictureLossIndication>() {
                    "pli"
                } else if a.is::<ReceiverReport>() {
                    "rr"
                } else if a.is::<TransportLayerNack>() {
                    "nack"
                } else if a.is::<SenderReport>() {
                    "sr"
                } else {
                    "other"
                }
            })
            .collect()
    }

    fn compound() -> TaggedPacket {
        rtcp(vec![
            Box::new(SenderReport::default()),
            Box::new(ReceiverReport::default()),
            Box::new(PictureLossIndication::default()),
            Box::new(TransportLayerNack::default()),
        ])
    }

    #[test]
    fn only_the_kept_packets_go_up_marked_for_the_application() {
        let mut up = RtcpToApplication::feedback();
        up.handle_read(compound()).unwrap();
        let got = up.poll_read().unwrap();
        assert_eq!(kinds(&got), vec!["sr", "rr", "pli", "nack"]);
        assert!(got.message.has(&Attribute::DeliverToApplication));

        let mut up = RtcpToApplication::keyframe_requests();
        up.handle_read(compound()).unwrap();
        assert_eq!(kinds(&up.poll_read().unwrap()), vec!["pli"]);
        // Nothing it keeps: nothing goes up.
        up.handle_read(rtcp(vec![Box::new(SenderReport::default())]))
            .unwrap();
        assert!(up.poll_read().is_none());
    }
}
