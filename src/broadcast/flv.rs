//! FLV tag bodies for RTMP audio and video messages (H.264 in AVCC form, AAC-LC), as
//! nginx-rtmp's HLS and DASH packagers expect them: an AVC sequence header
//! (`AVCDecoderConfigurationRecord`) and an AAC sequence header (`AudioSpecificConfig`) before
//! the first frames, and again after every reconnection.

/// FLV `SoundFormat` 10 (AAC), 44 kHz flag, 16-bit, stereo flag: what FLV requires for AAC
/// whatever the real rate and channels (those are in the AudioSpecificConfig).
const AAC_AUDIO_HEADER: u8 = 0xAF;
/// FLV `CodecID` 7: AVC.
const AVC_CODEC: u8 = 7;

/// The AVC sequence header tag body.
pub fn avc_sequence_header(config: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + config.len());
    out.extend_from_slice(&[(1 << 4) | AVC_CODEC, 0, 0, 0, 0]);
    out.extend_from_slice(config);
    out
}

/// A video tag body for one access unit in AVCC form (4-byte lengths). No B-frames: the
/// composition time offset is 0.
pub fn avc_frame(avcc: &[u8], keyframe: bool) -> Vec<u8> {
    let frame_type: u8 = if keyframe { 1 } else { 2 };
    let mut out = Vec::with_capacity(5 + avcc.len());
    out.extend_from_slice(&[(frame_type << 4) | AVC_CODEC, 1, 0, 0, 0]);
    out.extend_from_slice(avcc);
    out
}

/// The AAC sequence header tag body.
pub fn aac_sequence_header(asc: &[u8]) -> Vec<u8> {
    let mut out = vec![AAC_AUDIO_HEADER, 0];
    out.extend_from_slice(asc);
    out
}

/// An audio tag body for one raw AAC access unit.
pub fn aac_frame(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + raw.len());
    out.extend_from_slice(&[AAC_AUDIO_HEADER, 1]);
    out.extend_from_slice(raw);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_headers() {
        assert_eq!(avc_sequence_header(&[1, 66])[..5], [0x17, 0, 0, 0, 0]);
        assert_eq!(
            avc_frame(&[0, 0, 0, 1, 0x65], true)[..5],
            [0x17, 1, 0, 0, 0]
        );
        assert_eq!(avc_frame(&[0, 0, 0, 1, 0x41], false)[..2], [0x27, 1]);
        assert_eq!(aac_sequence_header(&[0x11, 0x90]), [0xAF, 0, 0x11, 0x90]);
        assert_eq!(aac_frame(&[9, 9]), [0xAF, 1, 9, 9]);
    }
}
