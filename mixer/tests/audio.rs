//! Behaviour of the audio mixer as a conference would observe it.

use comet_mixer::*;
use std::f64::consts::PI;

const N: usize = SAMPLES_PER_CHANNEL;

/// Frame `k` of a continuous sine.
fn sine(freq: f64, amp: f64, k: usize) -> Vec<i16> {
    (0..N)
        .map(|i| {
            let t = (k * N + i) as f64 / SAMPLE_RATE as f64;
            (amp * (2.0 * PI * freq * t).sin()).round() as i16
        })
        .collect()
}

/// Power of `freq` in `x` (Goertzel), normalised per sample.
fn goertzel(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * PI * freq / SAMPLE_RATE as f64;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v as f64 + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64 * x.len() as f64)
}

fn mixer(k: usize) -> AudioMixer {
    AudioMixer::new(MixerConfig {
        max_talkers: k,
        ..MixerConfig::default()
    })
    .unwrap()
}

fn inputs<'a>(ids: &[MemberId], frames: &'a [Vec<i16>]) -> Vec<MemberInput<'a>> {
    ids.iter()
        .zip(frames)
        .map(|(&member, pcm)| MemberInput {
            member,
            pcm,
            audio_level: None,
        })
        .collect()
}

#[test]
fn each_listener_hears_the_others_frequencies_and_not_its_own() {
    let freqs = [300.0, 520.0, 770.0, 1130.0];
    let mut m = mixer(4);
    let ids: Vec<_> = (0..4).map(|_| m.add_member().unwrap()).collect();
    let listener = m.add_member().unwrap(); // silent fifth member
    let mut heard: Vec<Vec<i16>> = vec![Vec::new(); 5];
    for k in 0..30 {
        let frames: Vec<_> = freqs.iter().map(|&f| sine(f, 4000.0, k)).collect();
        m.mix(k as u64 * 20, &inputs(&ids, &frames)).unwrap();
        if k >= 10 {
            for (i, &id) in ids.iter().chain([&listener]).enumerate() {
                heard[i].extend_from_slice(m.output(id).unwrap().pcm);
            }
        }
    }
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(m.output(id).unwrap().kind, OutputKind::Own);
        let own = goertzel(&heard[i], freqs[i]);
        for (j, &f) in freqs.iter().enumerate() {
            let p = goertzel(&heard[i], f);
            if j == i {
                continue;
            }
            // A 4000-amplitude sine has power (4000/2)^2 = 4e6 in this normalisation.
            assert!(p > 3.0e6, "listener {i} should hear {f} Hz, power {p}");
            assert!(own < p * 1e-6, "listener {i} hears itself: {own} vs {p}");
        }
    }
    assert_eq!(m.output(listener).unwrap().kind, OutputKind::Shared);
    for &f in &freqs {
        assert!(goertzel(&heard[4], f) > 3.0e6);
    }
}

#[test]
fn quiet_single_talker_passes_bit_exact() {
    let mut m = mixer(3);
    let a = m.add_member().unwrap();
    let b = m.add_member().unwrap();
    for k in 0..5 {
        let x = sine(440.0, 3000.0, k);
        m.mix(k as u64 * 20, &inputs(&[a], std::slice::from_ref(&x)))
            .unwrap();
        assert_eq!(
            m.output(b).unwrap().pcm,
            &x[..],
            "below the knee the mix is transparent"
        );
        assert!(
            m.output(a).unwrap().pcm.iter().all(|&s| s == 0),
            "a talker alone hears nothing"
        );
    }
}

#[test]
fn limiter_never_wraps_and_stays_bounded() {
    let mut m = mixer(8);
    m.set_master_gain(16.0).unwrap();
    let ids: Vec<_> = (0..8).map(|_| m.add_member().unwrap()).collect();
    let listener = m.add_member().unwrap();
    for k in 0..40 {
        // Full-scale square waves in phase: the raw sum is 8x full scale, times 16.
        let x: Vec<i16> = (0..N)
            .map(|i| if (i / 40) % 2 == 0 { 32767 } else { -32768 })
            .collect();
        let frames = vec![x.clone(); 8];
        m.mix(k * 20, &inputs(&ids, &frames)).unwrap();
        for (who, out) in [
            (listener, m.output(listener).unwrap()),
            (ids[0], m.output(ids[0]).unwrap()),
        ] {
            for (i, (&o, &s)) in out.pcm.iter().zip(&x).enumerate() {
                assert_eq!(
                    o.signum(),
                    s.signum(),
                    "wrap-around for {who:?} at frame {k} sample {i}: {o} for {s}"
                );
                assert!((-32767..=32767).contains(&o));
            }
        }
        if k >= 3 {
            // The gain-riding limiter pulls the level back under the knee.
            let peak = peak_of(m.shared_mix());
            assert!(peak <= 24576, "frame {k}: peak {peak} still in the knee");
            assert!(peak >= 20000, "frame {k}: limited too hard ({peak})");
        }
    }
}

/// What a listener hears must not click or pump: on a growing overload the gain falls
/// smoothly, sample by sample (also across frame boundaries and when a listener starts talking
/// and moves from the shared mix to an own N-1 mix), never wraps and stays under full scale.
#[test]
fn limiter_gain_changes_are_smooth_on_every_level() {
    for level in SimdLevel::all_supported() {
        let mut m = AudioMixer::new(MixerConfig {
            max_talkers: 8,
            simd: level,
            ..MixerConfig::default()
        })
        .unwrap();
        let ids: Vec<_> = (0..5).map(|_| m.add_member().unwrap()).collect();
        // Per member (listener 4 first, then talker 0): the last in-knee gain seen.
        let mut last: [Option<f64>; 5] = [None; 5];
        let mut largest_step = 0f64;
        let mut handed_over = false;
        for k in 0..60usize {
            // In-phase square waves whose amplitude keeps growing: the limiter keeps cutting.
            let amp = (2000 + 600 * k).min(32767) as i16;
            let x: Vec<i16> = (0..N)
                .map(|i| {
                    if ((k * N + i) / 60).is_multiple_of(2) {
                        amp
                    } else {
                        -amp
                    }
                })
                .collect();
            // Member 4 listens, then talks from frame 20 (and is mixed after the VAD attack).
            let talkers = if k < 20 { 4 } else { 5 };
            let frames = vec![x.clone(); talkers];
            m.mix(k as u64 * 20, &inputs(&ids[..talkers], &frames))
                .unwrap();
            let mixed: Vec<MemberId> = m.mixed_members().collect();
            for (w, &who) in [ids[4], ids[0]].iter().enumerate() {
                let out = m.output(who).unwrap();
                if who == ids[4] && out.kind == OutputKind::Own {
                    handed_over = true;
                }
                // What `who` hears before gain: everyone mixed but itself.
                let others = mixed.iter().filter(|&&j| j != who).count() as f64;
                for (i, (&o, &s)) in out.pcm.iter().zip(&x).enumerate() {
                    assert_eq!(o.signum(), s.signum(), "{level:?} wrap-around at {k}/{i}");
                    assert!((-32767..=32767).contains(&o));
                    if o.unsigned_abs() as f32 > 24576.0 {
                        // In the soft knee (the onset of an overload): not a plain gain.
                        last[w] = None;
                        continue;
                    }
                    let expected = others * s as f64;
                    let gain = o as f64 / expected;
                    if let Some(g) = last[w] {
                        // Rounding to i16 makes the measured gain uncertain by 1 / expected.
                        let step = (gain - g).abs() - 1.0 / expected.abs();
                        largest_step = largest_step.max(step);
                        assert!(
                            step <= 2.0 / N as f64,
                            "{level:?} member {w} frame {k} sample {i}: gain {g} -> {gain}"
                        );
                    }
                    last[w] = Some(gain);
                }
            }
        }
        assert!(handed_over, "{level:?}: member 4 never got its own mix");
        // The overload really was ridden down by the gain (not only by the knee).
        let peak = peak_of(m.shared_mix());
        assert!((20000..=24576).contains(&peak), "{level:?}: peak {peak}");
        assert!(largest_step > 0.0);
    }
}

#[test]
fn loudest_k_with_hysteresis() {
    let mut m = mixer(3);
    let ids: Vec<_> = (0..6).map(|_| m.add_member().unwrap()).collect();
    let mut amps = [1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0];
    let run = |m: &mut AudioMixer, amps: &[f64; 6], from: usize, frames: usize| {
        for k in from..from + frames {
            let f: Vec<_> = amps
                .iter()
                .enumerate()
                .map(|(i, &a)| sine(200.0 + 100.0 * i as f64, a, k))
                .collect();
            m.mix(k as u64 * 20, &inputs(&ids, &f)).unwrap();
        }
    };
    run(&mut m, &amps, 0, 10);
    let mut mixed: Vec<_> = m.mixed_members().collect();
    mixed.sort();
    assert_eq!(mixed, ids[3..].to_vec(), "the three loudest are mixed");
    // Member 2 becomes 3 dB louder than member 3: within the 6 dB margin, no change.
    amps[2] = 4000.0 * 1.41;
    run(&mut m, &amps, 10, 10);
    let mut mixed: Vec<_> = m.mixed_members().collect();
    mixed.sort();
    assert_eq!(mixed, ids[3..].to_vec(), "hysteresis keeps incumbents");
    assert!(!m.status(ids[2]).unwrap().mixed);
    // 12 dB louder than the quietest incumbent: it takes that slot.
    amps[2] = 16000.0;
    run(&mut m, &amps, 20, 3);
    let mut mixed: Vec<_> = m.mixed_members().collect();
    mixed.sort();
    assert_eq!(mixed, vec![ids[2], ids[4], ids[5]]);
    // An incumbent that stops talking frees its slot after the VAD release.
    amps[5] = 0.0;
    run(&mut m, &amps, 23, 45);
    let mut mixed: Vec<_> = m.mixed_members().collect();
    mixed.sort();
    assert_eq!(mixed, vec![ids[2], ids[3], ids[4]]);
}

#[test]
fn five_hundred_silent_members_share_one_mix() {
    let mut m = mixer(4);
    let ids: Vec<_> = (0..500).map(|_| m.add_member().unwrap()).collect();
    for k in 0..10 {
        let frames: Vec<_> = (0..500)
            .map(|i| {
                if i < 3 {
                    sine(300.0 + 200.0 * i as f64, 3000.0, k)
                } else {
                    vec![0; N]
                }
            })
            .collect();
        m.mix(k as u64 * 20, &inputs(&ids, &frames)).unwrap();
    }
    assert_eq!(m.mixed_members().count(), 3);
    let shared_ptr = m.shared_mix().as_ptr();
    for (i, &id) in ids.iter().enumerate() {
        let out = m.output(id).unwrap();
        if i < 3 {
            assert_eq!(out.kind, OutputKind::Own);
        } else {
            assert_eq!(out.kind, OutputKind::Shared);
            assert_eq!(out.pcm.as_ptr(), shared_ptr);
            assert!(!m.status(id).unwrap().talking);
        }
    }
}

#[test]
fn mute_deaf_and_gains() {
    let mut m = mixer(3);
    let a = m.add_member().unwrap();
    let b = m.add_member().unwrap();
    let c = m.add_member().unwrap();
    let d = m.add_member().unwrap();
    m.set_muted(a, true).unwrap();
    m.set_deaf(c, true).unwrap();
    m.set_input_gain(b, 0.5).unwrap();
    for k in 0..10 {
        let xa = sine(300.0, 6000.0, k);
        let xb = sine(700.0, 6000.0, k);
        m.mix(k as u64 * 20, &inputs(&[a, b], &[xa, xb.clone()]))
            .unwrap();
        // Muted a is not mixed; d hears b at half gain, exactly.
        let expect: Vec<i16> = xb
            .iter()
            .map(|&s| ((s as i32 * 2048) >> 12) as i16)
            .collect();
        assert_eq!(m.output(d).unwrap().pcm, &expect[..]);
        assert!(!m.status(a).unwrap().mixed);
        let c_out = m.output(c).unwrap();
        assert_eq!(c_out.kind, OutputKind::Silence);
        assert!(c_out.pcm.iter().all(|&s| s == 0));
    }
    assert!(
        m.status(a).unwrap().talking,
        "a muted member's activity is still reported"
    );
    assert!(m.status(a).unwrap().muted && m.status(c).unwrap().deaf);

    // Output gain: d gets an own output at twice the level once the ramp is done.
    m.set_output_gain(d, 2.0).unwrap();
    // Master gain halves everything: d ends at unity, the shared mix at half.
    m.set_master_gain(0.5).unwrap();
    for k in 10..13 {
        let xb = sine(700.0, 6000.0, k);
        m.mix(k as u64 * 20, &inputs(&[b], std::slice::from_ref(&xb)))
            .unwrap();
        if k == 12 {
            let half: Vec<i16> = xb
                .iter()
                .map(|&s| ((s as i32 * 2048) >> 12) as i16)
                .collect();
            let od = m.output(d).unwrap();
            assert_eq!(od.kind, OutputKind::Own);
            assert_eq!(od.pcm, &half[..], "d: 0.5 input x 2 output x 0.5 master");
            let quarter_ok = m
                .shared_mix()
                .iter()
                .zip(&half)
                .all(|(&o, &h)| (o as f32 - h as f32 * 0.5).abs() <= 0.5);
            assert!(quarter_ok, "shared mix at master gain 0.5");
        }
    }
    assert!(m.set_input_gain(b, -1.0).is_err());
    assert!(m.set_output_gain(b, f32::NAN).is_err());
    assert!(m.set_master_gain(100.0).is_err());
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut m = mixer(3);
    let a = m.add_member().unwrap();
    let short = vec![0i16; 100];
    let ok = vec![0i16; N];
    assert_eq!(
        m.mix(
            0,
            &[MemberInput {
                member: a,
                pcm: &short,
                audio_level: None
            }]
        ),
        Err(MixerError::FrameLength {
            expected: N,
            got: 100
        })
    );
    assert_eq!(
        m.mix(
            0,
            &[MemberInput {
                member: MemberId(99),
                pcm: &ok,
                audio_level: None
            }]
        ),
        Err(MixerError::UnknownMember(99))
    );
    let twice = [MemberInput {
        member: a,
        pcm: &ok,
        audio_level: None,
    }; 2];
    assert_eq!(m.mix(0, &twice), Err(MixerError::DuplicateInput(a.0)));
    // After an error the mixer still works and the member is not marked.
    m.mix(0, &twice[..1]).unwrap();
    m.remove_member(a).unwrap();
    assert!(m.output(a).is_err());
    assert!(m.mix(20, &twice[..1]).is_err());
    assert!(
        AudioMixer::new(MixerConfig {
            max_talkers: 0,
            ..MixerConfig::default()
        })
        .is_err()
    );
    let mut small = AudioMixer::new(MixerConfig {
        max_members: 1,
        ..MixerConfig::default()
    })
    .unwrap();
    small.add_member().unwrap();
    assert_eq!(small.add_member(), Err(MixerError::CapacityReached(1)));
}

#[test]
fn stereo_n_minus_one() {
    let mut m = AudioMixer::new(MixerConfig {
        channels: Channels::Stereo,
        ..MixerConfig::default()
    })
    .unwrap();
    assert_eq!(m.frame_len(), 2 * N);
    let a = m.add_member().unwrap();
    let b = m.add_member().unwrap();
    let mut stereo_a = vec![0i16; 2 * N];
    let mut stereo_b = vec![0i16; 2 * N];
    for k in 0..5 {
        upmix_mono_to_stereo(&sine(400.0, 3000.0, k), &mut stereo_a).unwrap();
        upmix_mono_to_stereo(&sine(900.0, 3000.0, k), &mut stereo_b).unwrap();
        m.mix(
            k as u64 * 20,
            &inputs(&[a, b], &[stereo_a.clone(), stereo_b.clone()]),
        )
        .unwrap();
        assert_eq!(m.output(a).unwrap().pcm, &stereo_b[..]);
        assert_eq!(m.output(b).unwrap().pcm, &stereo_a[..]);
    }
    let mut mono = vec![0i16; N];
    downmix_stereo_to_mono(&stereo_a, &mut mono).unwrap();
    assert_eq!(mono, sine(400.0, 3000.0, 4));
    assert!(downmix_stereo_to_mono(&stereo_a, &mut [0i16; 3]).is_err());
}

// ---- voice activity ----

/// Feeds `pcm` (48 kHz) through a one-member mixer, returning per-frame (talking, energy).
fn vad_trace(pcm: &[i16]) -> Vec<(bool, u8)> {
    let mut m = mixer(3);
    let a = m.add_member().unwrap();
    pcm.chunks_exact(N)
        .enumerate()
        .map(|(k, frame)| {
            m.mix(
                k as u64 * 20,
                &[MemberInput {
                    member: a,
                    pcm: frame,
                    audio_level: None,
                }],
            )
            .unwrap();
            let s = m.status(a).unwrap();
            (s.talking, s.energy)
        })
        .collect()
}

/// Deterministic low-level noise (xorshift), amplitude `amp`.
fn noise(len: usize, amp: i32, seed: &mut u32) -> Vec<i16> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 17;
            *seed ^= *seed << 5;
            ((*seed % (2 * amp as u32 + 1)) as i32 - amp) as i16
        })
        .collect()
}

fn frame_dbov(frame: &[i16]) -> f32 {
    let e: u64 = frame.iter().map(|&s| (s as i64 * s as i64) as u64).sum();
    dbov_from_energy(e, frame.len())
}

#[test]
fn vad_on_synthetic_syllables() {
    let mut seed = 7;
    let mut pcm = noise(50 * N, 30, &mut seed); // 1 s of room noise (about -60 dBov)
    // 2 s of "speech": 160 ms voiced syllables (harmonics with an envelope), 80 ms gaps.
    for syl in 0..8 {
        let f0 = 110.0 + 15.0 * syl as f64;
        let len = 160 * 48;
        for i in 0..len {
            let t = i as f64 / 48000.0;
            let env = (PI * i as f64 / len as f64).sin();
            let v: f64 = (1..6)
                .map(|h| (2.0 * PI * f0 * h as f64 * t).sin() / h as f64)
                .sum();
            pcm.push((6000.0 * env * v) as i16);
        }
        pcm.extend(noise(80 * 48, 30, &mut seed));
    }
    let speech_end = pcm.len() / N;
    pcm.extend(noise(100 * N, 30, &mut seed));
    let last_voiced = (0..speech_end)
        .rev()
        .find(|&k| frame_dbov(&pcm[k * N..(k + 1) * N]) > -45.0)
        .unwrap();
    let trace = vad_trace(&pcm);
    assert!(trace[..50].iter().all(|&(t, _)| !t), "noise is not speech");
    assert!(
        trace[..50].iter().all(|&(_, e)| e < 15),
        "noise energy is low"
    );
    let onset = trace.iter().position(|&(t, _)| t).expect("speech detected");
    assert!(
        (53..=58).contains(&onset),
        "talking ~100 ms after the first syllable (frame 50), got frame {onset}"
    );
    assert!(
        trace[onset..speech_end].iter().all(|&(t, _)| t),
        "no dropout in the gaps between syllables"
    );
    assert!(trace[onset..speech_end].iter().any(|&(_, e)| e > 60));
    let off = onset + trace[onset..].iter().position(|&(t, _)| !t).unwrap();
    let hang_ms = (off - last_voiced) * 20;
    assert!(
        (760..=860).contains(&hang_ms),
        "released ~800 ms after speech, got {hang_ms} ms"
    );
}

/// Reads a mono 16-bit PCM WAV.
fn read_wav(bytes: &[u8]) -> (u32, Vec<i16>) {
    assert!(
        &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "not a WAV file"
    );
    let mut pos = 12;
    let mut rate = 0;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &bytes[pos + 8..(pos + 8 + size).min(bytes.len())];
        if id == b"fmt " {
            assert_eq!(
                u16::from_le_bytes([body[2], body[3]]),
                1,
                "mono WAV expected"
            );
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            assert_eq!(
                u16::from_le_bytes([body[14], body[15]]),
                16,
                "16-bit WAV expected"
            );
        } else if id == b"data" {
            let s = body
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (rate, s);
        }
        pos += 8 + size + (size & 1);
    }
    panic!("WAV without data chunk");
}

/// Linear-interpolation resampler to 48 kHz (good enough for levels).
fn resample_to_48k(rate: u32, x: &[i16]) -> Vec<i16> {
    let out_len = (x.len() as u64 * 48000 / rate as u64) as usize;
    (0..out_len)
        .map(|i| {
            let p = i as f64 * rate as f64 / 48000.0;
            let j = p as usize;
            let f = p - j as f64;
            let a = x[j] as f64;
            let b = *x.get(j + 1).unwrap_or(&x[j]) as f64;
            (a + (b - a) * f).round() as i16
        })
        .collect()
}

#[test]
fn vad_on_espeak_speech() {
    let dir = std::env::temp_dir().join(format!("comet-mixer-vad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("speech.wav");
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .arg("Hello everyone, this is a test of the voice activity detector in the conference mixer.")
        .status()
        .unwrap_or_else(|e| {
            panic!("espeak-ng is required for this test (apt-get install espeak-ng): {e}")
        });
    assert!(status.success(), "espeak-ng failed: {status}");
    let (rate, speech) = read_wav(&std::fs::read(&wav).unwrap());
    std::fs::remove_dir_all(&dir).ok();
    let speech = resample_to_48k(rate, &speech);
    assert!(
        speech.len() > 48000,
        "espeak produced under a second of audio"
    );

    let mut seed = 99;
    let mut pcm = noise(50 * N, 20, &mut seed);
    let start = pcm.len() / N;
    pcm.extend(&speech);
    pcm.resize(pcm.len().div_ceil(N) * N, 0);
    let end = pcm.len() / N;
    pcm.extend(noise(75 * N, 20, &mut seed));
    let trace = vad_trace(&pcm);

    // Where the speech really is, from its own frame levels.
    let voiced: Vec<usize> = (start..end)
        .filter(|&k| frame_dbov(&pcm[k * N..(k + 1) * N]) > -45.0)
        .collect();
    let (first, last) = (voiced[0], *voiced.last().unwrap());
    assert!(
        trace[..start].iter().all(|&(t, _)| !t),
        "no speech in the leading noise"
    );
    let onset = trace.iter().position(|&(t, _)| t).expect("speech detected");
    assert!(
        onset + 5 >= first && onset <= first + 10,
        "onset {onset} vs first voiced frame {first}"
    );
    let talking = trace[first..=last].iter().filter(|&&(t, _)| t).count();
    assert!(
        talking * 10 >= (last - first + 1) * 9,
        "talking through at least 90% of the utterance"
    );
    assert!(!trace.last().unwrap().0, "silent again after the utterance");
    let off = last + trace[last..].iter().position(|&(t, _)| !t).unwrap();
    assert!(
        (35..=50).contains(&(off - last)),
        "release ~800 ms after the last voiced frame, got {} frames",
        off - last
    );
}

#[test]
fn rfc6464_level_is_used_when_present() {
    let mut m = mixer(3);
    let a = m.add_member().unwrap();
    let b = m.add_member().unwrap();
    let silent = vec![0i16; N];
    let loud = sine(500.0, 10000.0, 0);
    for k in 0..10 {
        m.mix(
            k * 20,
            &[
                MemberInput {
                    member: a,
                    pcm: &silent,
                    audio_level: Some(20),
                },
                MemberInput {
                    member: b,
                    pcm: &loud,
                    audio_level: Some(127),
                },
            ],
        )
        .unwrap();
    }
    let (sa, sb) = (m.status(a).unwrap(), m.status(b).unwrap());
    assert!(sa.talking && sa.energy == energy_from_dbov(-20.0));
    assert!(!sb.talking && sb.energy == 0);
    assert_eq!(sa.level_dbov, -20.0);
}

// ---- dominant speaker ----

/// Runs frames where `level(k, member)` gives each member's amplitude (0 = silent).
fn run_dominant(
    m: &mut AudioMixer,
    ids: &[MemberId],
    frames: std::ops::Range<usize>,
    level: impl Fn(usize, usize) -> f64,
) -> Vec<Option<MemberId>> {
    frames
        .map(|k| {
            let f: Vec<_> = (0..ids.len())
                .map(|i| sine(250.0 + 150.0 * i as f64, level(k, i), k))
                .collect();
            m.mix(k as u64 * 20, &inputs(ids, &f)).unwrap();
            m.dominant_speaker()
        })
        .collect()
}

#[test]
fn dominant_speaker_follows_turns_without_flapping() {
    let mut m = mixer(3);
    let ids: Vec<_> = (0..3).map(|_| m.add_member().unwrap()).collect();
    // Turns: A for 3 s, B for 3 s, A for 3 s.
    let trace = run_dominant(&mut m, &ids, 0..450, |k, i| {
        let turn = if (150..300).contains(&k) { 1 } else { 0 };
        if i == turn { 5000.0 } else { 0.0 }
    });
    assert_eq!(trace[149], Some(ids[0]));
    let b_from = (150..300)
        .find(|&k| trace[k] == Some(ids[1]))
        .expect("B becomes dominant");
    assert!(b_from - 150 <= 50, "took {} ms", (b_from - 150) * 20);
    assert!(trace[b_from..300].iter().all(|&d| d == Some(ids[1])));
    let a_from = (300..450)
        .find(|&k| trace[k] == Some(ids[0]))
        .expect("A back");
    assert!(a_from - 300 <= 50);
    let switches = trace.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 3, "first pick plus two turn changes");
}

#[test]
fn dominant_speaker_ignores_interjections_and_jitter() {
    let mut m = mixer(3);
    let ids: Vec<_> = (0..3).map(|_| m.add_member().unwrap()).collect();
    // A talks throughout; B and C talk at the same level with per-frame level jitter, and
    // C adds loud 200 ms interjections every second.
    let trace = run_dominant(&mut m, &ids, 0..600, |k, i| {
        let jitter = 1.0 + 0.3 * (((k * 7 + i * 13) % 10) as f64 / 10.0 - 0.5);
        match i {
            0 => 5000.0 * jitter,
            1 if k >= 50 => 5000.0 * jitter,
            2 if k % 50 < 10 && k >= 50 => 15000.0,
            _ => 0.0,
        }
    });
    let switches = trace.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(trace[10], Some(ids[0]));
    assert!(switches <= 1, "dominant speaker flapped {switches} times");
    assert_eq!(*trace.last().unwrap(), Some(ids[0]));
}

#[test]
fn dominant_speaker_hands_over_at_once_when_the_speaker_stops() {
    let mut m = mixer(3);
    let ids: Vec<_> = (0..3).map(|_| m.add_member().unwrap()).collect();
    // A talks for 3 s, then stops; B starts loudly in the same frame.
    let trace = run_dominant(&mut m, &ids, 0..300, |k, i| {
        let turn = if k < 150 { 0 } else { 1 };
        if i == turn { 8000.0 } else { 0.0 }
    });
    assert_eq!(trace[149], Some(ids[0]));
    let b_from = (150..300)
        .find(|&k| trace[k] == Some(ids[1]))
        .expect("B becomes dominant");
    // B's voice activity needs 100 ms (attack), A has to be silent 200 ms (hand-over):
    // the switch comes 200 ms after the change, not after the score rule's ~700 ms.
    let took_ms = (b_from - 150 + 1) * 20;
    assert!(took_ms <= 220, "took {took_ms} ms");
    assert!(trace[b_from..].iter().all(|&d| d == Some(ids[1])));
}

/// Both talk at once with speech-like pauses longer than the hand-over silence: the speaker
/// may change, but never sooner than the minimum hold after the last change.
#[test]
fn dominant_speaker_holds_when_two_talk_at_once_with_pauses() {
    let mut m = mixer(3);
    let ids: Vec<_> = (0..3).map(|_| m.add_member().unwrap()).collect();
    // A: 700 ms of voice, 300 ms pause; B the same, 500 ms later; C silent. 20 s.
    let trace = run_dominant(&mut m, &ids, 0..1000, |k, i| match i {
        0 if k % 50 < 35 => 6000.0,
        1 if (k + 25) % 50 < 35 => 6000.0,
        _ => 0.0,
    });
    let changes: Vec<usize> = (1..trace.len())
        .filter(|&k| trace[k] != trace[k - 1])
        .collect();
    assert!(!changes.is_empty());
    let hold_frames = (DominantConfig::default().min_hold_ms / 20) as usize;
    for w in changes.windows(2) {
        assert!(
            w[1] - w[0] >= hold_frames,
            "speaker changed after {} ms (changes at frames {changes:?})",
            (w[1] - w[0]) * 20
        );
    }
    assert!(trace.iter().all(|d| *d != Some(ids[2])));
}

/// The speaker's short gaps (below the hand-over silence) while someone else talks
/// continuously, more quietly: the speaker keeps the floor.
#[test]
fn dominant_speaker_keeps_the_floor_through_short_gaps() {
    let mut m = mixer(3);
    let ids: Vec<_> = (0..3).map(|_| m.add_member().unwrap()).collect();
    // A: 160 ms gaps every 600 ms (below the 200 ms hand-over); B continuous from 1 s.
    let trace = run_dominant(&mut m, &ids, 0..600, |k, i| match i {
        0 if k % 30 >= 8 => 9000.0,
        1 if k >= 50 => 2500.0,
        _ => 0.0,
    });
    assert_eq!(trace[40], Some(ids[0]));
    let switches = trace.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "only the first pick: {switches}");
    assert_eq!(*trace.last().unwrap(), Some(ids[0]));
}

/// The largest sample magnitude of `pcm` (0 for none).
fn peak_of(pcm: &[i16]) -> u16 {
    pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
}
