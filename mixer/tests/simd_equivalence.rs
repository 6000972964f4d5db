//! Every SIMD level must produce exactly the scalar output.

use comet_mixer::kernels;
use comet_mixer::*;
use proptest::prelude::*;

fn levels() -> Vec<SimdLevel> {
    let l: Vec<_> = SimdLevel::all_supported().collect();
    #[cfg(target_arch = "x86_64")]
    assert!(l.contains(&SimdLevel::Sse2), "x86_64 always has SSE2");
    #[cfg(target_arch = "aarch64")]
    assert!(l.contains(&SimdLevel::Neon), "aarch64 always has NEON");
    l
}

/// Samples biased towards the interesting extremes.
fn sample() -> impl Strategy<Value = i16> {
    prop_oneof![
        3 => any::<i16>(),
        1 => Just(i16::MIN),
        1 => Just(i16::MAX),
        1 => -200i16..200,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn energy_matches(x in prop::collection::vec(sample(), 0..2000)) {
        let want = kernels::energy(SimdLevel::Scalar, &x);
        let exact: u64 = x.iter().map(|&s| (s as i64 * s as i64) as u64).sum();
        prop_assert_eq!(want, exact);
        for l in levels() {
            prop_assert_eq!(kernels::energy(l, &x), want, "{:?}", l);
        }
    }

    #[test]
    fn accumulate_matches(
        x in prop::collection::vec(sample(), 0..1000),
        seed in prop::collection::vec(-(1i32 << 27)..(1 << 27), 1000),
        gain in prop_oneof![Just(4096), 0i32..=32767],
    ) {
        let mut want = seed[..x.len()].to_vec();
        kernels::accumulate(SimdLevel::Scalar, &mut want, &x, gain);
        for (i, &s) in x.iter().enumerate() {
            prop_assert_eq!(want[i], seed[i] + ((s as i32 * gain) >> 12));
        }
        for l in levels() {
            let mut got = seed[..x.len()].to_vec();
            kernels::accumulate(l, &mut got, &x, gain);
            prop_assert_eq!(&got, &want, "{:?}", l);
        }
    }

    #[test]
    fn sum_matches(
        xs in prop::collection::vec(
            (prop::collection::vec(sample(), 0..1000), prop_oneof![Just(4096), -10i32..=40000]),
            0..10,
        ),
        seed in prop::collection::vec(-(1i32 << 27)..(1 << 27), 0..1000),
        assign in any::<bool>(),
    ) {
        let srcs: Vec<(&[i16], i32)> = xs.iter().map(|(x, g)| (&x[..], *g)).collect();
        let mut want = seed.clone();
        if assign {
            want.fill(0);
        }
        for &(x, g) in &srcs {
            kernels::accumulate(SimdLevel::Scalar, &mut want, x, g);
        }
        for l in levels() {
            let mut got = seed.clone();
            kernels::sum(l, &mut got, &srcs, assign);
            prop_assert_eq!(&got, &want, "{:?}", l);
        }
    }

    #[test]
    fn render_matches(
        acc in prop::collection::vec(prop_oneof![3 => -40000i32..40000, 1 => -(1i32 << 27)..(1 << 27)], 0..1000),
        x in prop::collection::vec(sample(), 1000),
        own_gain in prop_oneof![Just(None), Just(Some(4096)), (0i32..=32767).prop_map(Some)],
        g0 in prop_oneof![Just(1.0f32), 0.0f32..16.0],
        g1 in prop_oneof![Just(1.0f32), 0.0f32..16.0],
    ) {
        let step = (g1 - g0) / acc.len().max(1) as f32;
        let own = own_gain.map(|g| (&x[..acc.len()], g));
        let mut want = vec![0i16; acc.len()];
        let want_peak = kernels::render(SimdLevel::Scalar, &acc, own, g0, step, &mut want);
        for l in levels() {
            let mut got = vec![0i16; acc.len()];
            let peak = kernels::render(l, &acc, own, g0, step, &mut got);
            prop_assert_eq!(&got, &want, "{:?}", l);
            prop_assert_eq!(peak, want_peak, "{:?}", l);
        }
    }

    /// The one-pass unity renderer, on every level (scalar included), against the i32 sum
    /// and render: every output it reports valid is exactly theirs, and it reports exactly
    /// the outputs beyond the knee (or, for the shared mix, a partial sum beyond it) invalid.
    #[test]
    fn onepass_matches_sum_and_render(
        xs in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![4 => -9000i16..9000, 1 => sample(), 2 => -100i16..100],
                1000,
            ),
            0..=kernels::ONEPASS_MAX,
        ),
        len in 0usize..1000,
        with_own in prop::collection::vec(any::<bool>(), kernels::ONEPASS_MAX),
        quiet in any::<bool>(),
    ) {
        let k = xs.len();
        // Half the cases scaled down so that they stay within the knee.
        let xs: Vec<Vec<i16>> = xs
            .iter()
            .map(|x| x[..len].iter().map(|&s| if quiet { s / 8 } else { s }).collect())
            .collect();
        let srcs: Vec<&[i16]> = xs.iter().map(|x| &x[..]).collect();
        let knee = kernels::KNEE as u32;
        let unity: Vec<(&[i16], i32)> = srcs.iter().map(|&x| (x, 4096)).collect();
        let mut acc = vec![0i32; len];
        kernels::sum(SimdLevel::Scalar, &mut acc, &unity, true);
        let mut want_shared = vec![0i16; len];
        let want_peak = kernels::render(SimdLevel::Scalar, &acc, None, 1.0, 0.0, &mut want_shared);
        let mut want_own = vec![vec![0i16; len]; k];
        let want_own_peak: Vec<u32> = (0..k)
            .map(|j| {
                kernels::render(SimdLevel::Scalar, &acc, Some((srcs[j], 4096)), 1.0, 0.0, &mut want_own[j])
            })
            .collect();
        let partial_over = (0..len).any(|n| {
            let mut v = 0i32;
            (0..k).any(|j| {
                v += srcs[j][n] as i32;
                j >= 1 && j + 1 < k && v.unsigned_abs() > knee
            })
        });
        if quiet && k <= 3 {
            prop_assert!(!partial_over && want_peak <= knee);
        }
        for l in levels() {
            let mut shared = vec![0i16; len];
            let mut bufs: Vec<Vec<i16>> =
                (0..k).map(|j| if with_own[j] { vec![0i16; len] } else { Vec::new() }).collect();
            let mut owns: Vec<&mut [i16]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
            let mut peaks = vec![0u32; k];
            let got = kernels::onepass(l, &srcs, &mut shared, &mut owns, &mut peaks);
            if partial_over || want_peak > knee {
                prop_assert_eq!(got, None, "{:?}", l);
                continue;
            }
            prop_assert_eq!(got, Some(want_peak), "{:?}", l);
            prop_assert_eq!(&shared, &want_shared, "{:?}", l);
            for j in 0..k {
                if !with_own[j] {
                    continue;
                }
                prop_assert_eq!(peaks[j] > knee, want_own_peak[j] > knee, "{:?} own {}", l, j);
                if want_own_peak[j] <= knee {
                    prop_assert_eq!(peaks[j], want_own_peak[j], "{:?} own {}", l, j);
                    prop_assert_eq!(&bufs[j], &want_own[j], "{:?} own {}", l, j);
                }
            }
        }
    }

    #[test]
    fn blend_rows_matches(
        a in prop::collection::vec(any::<u8>(), 0..300),
        b in prop::collection::vec(any::<u8>(), 300),
        f in 0u16..=256,
    ) {
        let b = &b[..a.len()];
        let mut want = vec![0u8; a.len()];
        kernels::blend_rows(SimdLevel::Scalar, &a, b, f, &mut want);
        for l in levels() {
            let mut got = vec![0u8; a.len()];
            kernels::blend_rows(l, &a, b, f, &mut got);
            prop_assert_eq!(&got, &want, "{:?}", l);
        }
    }
}

#[test]
fn energy_exact_at_full_scale() {
    // Every multiply-add lane at its maximum (2^31) in every SIMD accumulator.
    for len in [
        0usize,
        1,
        7,
        8,
        15,
        16,
        31,
        32,
        33,
        960,
        1920,
        4099,
        1 << 20,
    ] {
        for v in [i16::MIN, i16::MAX] {
            let x = vec![v; len];
            let want = len as u64 * (v as i64 * v as i64) as u64;
            for l in levels() {
                assert_eq!(kernels::energy(l, &x), want, "{l:?} {v} x {len}");
            }
        }
    }
}

/// One member's behaviour over the test frames.
#[derive(Clone, Debug)]
struct MemberPlan {
    amp: i16,
    freq: u32,
    noise: bool,
    muted: bool,
    deaf: bool,
    in_gain: f32,
    out_gain: f32,
    level: Option<u8>,
    absent_frame: Option<usize>,
}

fn member_plan() -> impl Strategy<Value = MemberPlan> {
    (
        prop_oneof![2 => Just(0i16), 3 => 100i16..32767],
        50u32..4000,
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop_oneof![3 => Just(1.0f32), 1 => 0.0f32..7.9],
        prop_oneof![3 => Just(1.0f32), 1 => 0.0f32..16.0],
        prop::option::weighted(0.2, 0u8..=127),
        prop::option::weighted(0.2, 0usize..4),
    )
        .prop_map(
            |(amp, freq, noise, muted, deaf, in_gain, out_gain, level, absent_frame)| MemberPlan {
                amp,
                freq,
                noise,
                muted,
                deaf,
                in_gain,
                out_gain,
                level,
                absent_frame,
            },
        )
}

/// Runs four frames with the given SIMD level; returns every member's output per frame plus
/// statuses and the dominant speaker.
fn run(level: SimdLevel, k: usize, stereo: bool, master: f32, plans: &[MemberPlan]) -> Vec<String> {
    let channels = if stereo {
        Channels::Stereo
    } else {
        Channels::Mono
    };
    let mut m = AudioMixer::new(MixerConfig {
        channels,
        max_talkers: k,
        simd: level,
        ..MixerConfig::default()
    })
    .unwrap();
    assert_eq!(m.simd_level(), level);
    m.set_master_gain(master).unwrap();
    let ids: Vec<_> = plans.iter().map(|_| m.add_member().unwrap()).collect();
    for (&id, p) in ids.iter().zip(plans) {
        m.set_muted(id, p.muted).unwrap();
        m.set_deaf(id, p.deaf).unwrap();
        m.set_input_gain(id, p.in_gain).unwrap();
        m.set_output_gain(id, p.out_gain).unwrap();
    }
    let len = m.frame_len();
    let mut log = Vec::new();
    let mut rng = 0x1234_5678u32;
    for frame in 0..4 {
        let pcm: Vec<Vec<i16>> = plans
            .iter()
            .map(|p| {
                (0..len)
                    .map(|i| {
                        rng ^= rng << 13;
                        rng ^= rng >> 17;
                        rng ^= rng << 5;
                        let t = (frame * len + i) as f32 / 48000.0;
                        let s = (p.amp as f32 * (t * p.freq as f32 * std::f32::consts::TAU).sin())
                            as i32;
                        let n = if p.noise {
                            (rng % 2001) as i32 - 1000
                        } else {
                            0
                        };
                        (s + n).clamp(-32768, 32767) as i16
                    })
                    .collect()
            })
            .collect();
        let inputs: Vec<_> = ids
            .iter()
            .zip(plans)
            .zip(&pcm)
            .filter(|((_, p), _)| p.absent_frame != Some(frame))
            .map(|((&member, p), pcm)| MemberInput {
                member,
                pcm,
                audio_level: p.level,
            })
            .collect();
        m.mix(frame as u64 * 20, &inputs).unwrap();
        log_frame(&m, &ids, &mut log);
    }
    log
}

/// What every member hears after a frame (kind, status, samples), and the dominant speaker.
fn log_frame(m: &AudioMixer, ids: &[MemberId], log: &mut Vec<String>) {
    for &id in ids {
        let o = m.output(id).unwrap();
        log.push(format!(
            "{id:?} {:?} {:?} {:?}",
            o.kind,
            m.status(id).unwrap(),
            o.pcm
        ));
    }
    log.push(format!("dominant {:?}", m.dominant_speaker()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whole mixer, member counts 1..=128: identical outputs on every SIMD level.
    #[test]
    fn mixer_outputs_identical_across_levels(
        plans in prop::collection::vec(member_plan(), 1..=128),
        k in prop_oneof![Just(3usize), 1usize..=128],
        stereo in any::<bool>(),
        master in prop_oneof![Just(1.0f32), 0.0f32..16.0],
    ) {
        let want = run(SimdLevel::Scalar, k, stereo, master, &plans);
        for l in levels().into_iter().filter(|&l| l != SimdLevel::Scalar) {
            let got = run(l, k, stereo, master, &plans);
            prop_assert!(got == want, "{:?} differs from scalar", l);
        }
    }
}

#[test]
fn member_count_extremes_identical_across_levels() {
    // The property test draws counts at random; pin both ends of 1..=128 explicitly.
    for count in [1usize, 2, 127, 128] {
        let plans: Vec<_> = (0..count)
            .map(|i| MemberPlan {
                amp: if i % 3 == 0 { 30000 } else { 0 },
                freq: 100 + 37 * i as u32,
                noise: i % 2 == 0,
                muted: i % 11 == 5,
                deaf: i % 13 == 7,
                in_gain: if i % 5 == 1 { 3.3 } else { 1.0 },
                out_gain: if i % 7 == 2 { 5.5 } else { 1.0 },
                level: None,
                absent_frame: None,
            })
            .collect();
        let want = run(SimdLevel::Scalar, 128, false, 2.0, &plans);
        for l in levels() {
            assert!(
                run(l, 128, false, 2.0, &plans) == want,
                "{l:?} count {count}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Scaling any source size into any tile gives the same canvas on every level.
    #[test]
    fn compose_identical_across_levels(
        sw in 1u32..300, sh in 1u32..200,
        tx in 0u32..100, ty in 0u32..60, tw in 1u32..110, th in 1u32..70,
        seed in any::<u32>(),
    ) {
        let mut src = I420Image::new(sw, sh).unwrap();
        {
            let (y, u, v) = src.planes_mut();
            let mut r = seed | 1;
            for p in y.iter_mut().chain(u.iter_mut()).chain(v.iter_mut()) {
                r ^= r << 13;
                r ^= r >> 17;
                r ^= r << 5;
                *p = r as u8;
            }
        }
        let rect = Rect::new(tx * 2, ty * 2, tw * 2, th * 2);
        let canvas = CanvasDesc {
            width: 424,
            height: 264,
            big: None,
            tiles: vec![TileDesc { member: 1, rect, content: TileContent::Video, border: false }],
        };
        let compose = |level| {
            let mut out = I420Image::new(424, 264).unwrap();
            Compositor::new(level).compose(&canvas, |_| Some(src.view()), &mut out).unwrap();
            out
        };
        let want = compose(SimdLevel::Scalar);
        for l in levels() {
            prop_assert!(compose(l) == want, "{:?}", l);
        }
    }
}

/// Something that changes before a frame of [`run_script`].
#[derive(Clone, Copy, Debug)]
enum Change {
    None,
    Mute(usize, bool),
    Deaf(usize, bool),
    InGain(usize, f32),
    OutGain(usize, f32),
    Master(f32),
    /// The member sends nothing this frame.
    Absent(usize),
    /// The member sends silence from now on (or a tone again).
    Silent(usize, bool),
}

fn change() -> impl Strategy<Value = Change> {
    let who = 0usize..6;
    prop_oneof![
        6 => Just(Change::None),
        1 => (who.clone(), any::<bool>()).prop_map(|(i, b)| Change::Mute(i, b)),
        1 => (who.clone(), any::<bool>()).prop_map(|(i, b)| Change::Deaf(i, b)),
        1 => (who.clone(), prop_oneof![Just(1.0f32), 0.0f32..7.9]).prop_map(|(i, g)| Change::InGain(i, g)),
        1 => (who.clone(), prop_oneof![Just(1.0f32), 0.0f32..4.0]).prop_map(|(i, g)| Change::OutGain(i, g)),
        1 => prop_oneof![Just(1.0f32), 0.0f32..4.0].prop_map(Change::Master),
        2 => who.clone().prop_map(Change::Absent),
        2 => (who, any::<bool>()).prop_map(|(i, b)| Change::Silent(i, b)),
    ]
}

/// Six members (tones of random loudness) over 40 frames with `changes` applied one per
/// frame; every member's output, status and the dominant speaker per frame.
fn run_script(level: SimdLevel, k: usize, amps: &[i16], changes: &[Change]) -> Vec<String> {
    let mut m = AudioMixer::new(MixerConfig {
        max_talkers: k,
        simd: level,
        ..MixerConfig::default()
    })
    .unwrap();
    let ids: Vec<_> = amps.iter().map(|_| m.add_member().unwrap()).collect();
    let len = m.frame_len();
    let mut silent = vec![false; amps.len()];
    let mut log = Vec::new();
    for (frame, &c) in changes.iter().enumerate() {
        let mut absent = None;
        match c {
            Change::None => {}
            Change::Mute(i, b) => m.set_muted(ids[i], b).unwrap(),
            Change::Deaf(i, b) => m.set_deaf(ids[i], b).unwrap(),
            Change::InGain(i, g) => m.set_input_gain(ids[i], g).unwrap(),
            Change::OutGain(i, g) => m.set_output_gain(ids[i], g).unwrap(),
            Change::Master(g) => m.set_master_gain(g).unwrap(),
            Change::Absent(i) => absent = Some(i),
            Change::Silent(i, b) => silent[i] = b,
        }
        let pcm: Vec<Vec<i16>> = amps
            .iter()
            .enumerate()
            .map(|(j, &amp)| {
                let amp = if silent[j] { 0.0 } else { amp as f32 };
                let f = 150.0 + 211.0 * j as f32;
                (0..len)
                    .map(|n| {
                        let t = (frame * len + n) as f32 / 48000.0;
                        (amp * (t * f * std::f32::consts::TAU).sin()) as i16
                    })
                    .collect()
            })
            .collect();
        let inputs: Vec<_> = ids
            .iter()
            .zip(&pcm)
            .enumerate()
            .filter(|&(j, _)| absent != Some(j))
            .map(|(_, (&member, pcm))| MemberInput {
                member,
                pcm,
                audio_level: None,
            })
            .collect();
        m.mix(frame as u64 * 20, &inputs).unwrap();
        log.push(format!("frame {frame}"));
        log_frame(&m, &ids, &mut log);
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Talkers, mutes, deafness and gains that change between frames (the one pass applies
    /// on some frames and not on others, limiters hand over): identical outputs on every
    /// SIMD level.
    #[test]
    fn changes_between_frames_identical_across_levels(
        amps in prop::collection::vec(prop_oneof![1 => Just(0i16), 3 => 300i16..6000, 1 => 6000i16..20000], 6),
        k in 1usize..=5,
        changes in prop::collection::vec(change(), 40),
    ) {
        let want = run_script(SimdLevel::Scalar, k, &amps, &changes);
        for l in levels().into_iter().filter(|&l| l != SimdLevel::Scalar) {
            let got = run_script(l, k, &amps, &changes);
            prop_assert!(got == want, "{:?} differs from scalar", l);
        }
    }
}
