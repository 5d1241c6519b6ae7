"""segsweep.dicom: pixels after rescale/photometric, whitelisted fields only, typed QC reasons."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from segsweep.data import dicom

# every image-holding file of pydicom's shipped corpus → expected outcome ("ok" or a reason code)
CORPUS = {
    "MR_small.dcm": "ok",
    "MR_small_implicit.dcm": "ok",
    "MR_small_bigendian.dcm": "ok",
    "MR_small_expb.dcm": "ok",
    "MR_small_padded.dcm": "ok",
    "MR_small_RLE.dcm": "ok",
    "MR_small_jp2klossless.dcm": "ok",
    "MR_small_jpeg_ls_lossless.dcm": "ok",
    "CT_small.dcm": "ok",
    "JPEG2000.dcm": "ok",
    "JPGExtended.dcm": "ok",
    "693_J2KI.dcm": "ok",
    "J2K_pixelrep_mismatch.dcm": "ok",
    "examples_overlay.dcm": "ok",
    "image_dfl.dcm": "ok",
    "JPEGLSNearLossless_08.dcm": "ok",
    "JPEGLSNearLossless_16.dcm": "ok",
    "rtdose.dcm": "ok",
    "rtdose_1frame.dcm": "ok",
    "rtdose_expb.dcm": "ok",
    "rtdose_rle.dcm": "ok",
    "MR_truncated.dcm": "dicom_truncated",
    "JPEG-lossy.dcm": "dicom_decode_failed",
    "JPEG2000-embedded-sequence-delimiter.dcm": "dicom_decode_failed",
    "badVR.dcm": "dicom_bad_header",
    "meta_missing_tsyntax.dcm": "dicom_bad_header",
    "nested_priv_SQ.dcm": "dicom_bad_header",
    "liver_1frame.dcm": "dicom_unsupported",
    "no_meta.dcm": "dicom_not_dicom",
    "ExplVR_BigEnd.dcm": "dicom_color",
    "examples_palette.dcm": "dicom_color",
    "examples_rgb_color.dcm": "dicom_color",
    "examples_ybr_color.dcm": "dicom_color",
    "SC_rgb_rle_16bit_2frame.dcm": "dicom_color",
    "SC_rgb_jpeg.dcm": "dicom_color",
    "examples_jpeg2k.dcm": "dicom_color",
    "rtplan.dcm": "dicom_no_pixels",
    "rtstruct.dcm": "dicom_no_pixels",
    "test-SR.dcm": "dicom_no_pixels",
    "waveform_ecg.dcm": "dicom_no_pixels",
    "ExplVR_LitEndNoMeta.dcm": "dicom_no_pixels",
    "ExplVR_BigEndNoMeta.dcm": "dicom_no_pixels",
    "rtplan_truncated.dcm": "dicom_truncated",
}


def outcome(path) -> str:
    try:
        dicom.read(path)
    except dicom.DicomError as exc:
        assert exc.reason in dicom.REASONS
        return exc.reason
    return "ok"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_file_read_or_rejected_with_reason(name):
    assert outcome(get_testdata_file(name)) == CORPUS[name]


def test_every_dcm_in_the_local_corpus_is_read_or_rejected_never_crashes():
    # list the shipped folder (no get_testdata_files('*'): it would try to download extras)
    folder = Path(get_testdata_file("MR_small.dcm")).parent
    names = sorted(n for n in os.listdir(folder) if n.endswith(".dcm"))
    assert len(names) > 60
    results = {n: outcome(folder / n) for n in names}  # any other exception fails the test
    assert sum(r == "ok" for r in results.values()) >= 20


def test_lossless_and_endian_variants_give_identical_pixels():
    ref = dicom.read(get_testdata_file("MR_small.dcm"))
    assert ref.pixels.shape == (1, 64, 64) and ref.pixels.dtype == np.float32
    assert ref.pixel_spacing == (0.3125, 0.3125) and ref.signed
    for name in (
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm",
    ):
        np.testing.assert_array_equal(dicom.read(get_testdata_file(name)).pixels, ref.pixels, err_msg=name)


def test_fast_path_equals_pixel_array():
    for name in ("MR_small.dcm", "CT_small.dcm", "examples_overlay.dcm", "image_dfl.dcm", "rtdose.dcm"):
        im = dicom.read(get_testdata_file(name))
        ds = pydicom.dcmread(get_testdata_file(name))
        ref = ds.pixel_array.reshape(im.stored.shape)
        np.testing.assert_array_equal(im.stored, ref, err_msg=name)


def test_multiframe_gives_one_image_per_frame():
    im = dicom.read(get_testdata_file("rtdose.dcm"))
    assert im.n_frames == 15 and im.pixels.shape == (15, 10, 10)
    np.testing.assert_array_equal(im.frame(3), im.pixels[3])


def test_rescale_slope_intercept(dicom_write):
    px = np.arange(12, dtype=np.uint16).reshape(3, 4) * 10
    im = dicom.read(dicom_write("r.dcm", px, RescaleSlope="2.5", RescaleIntercept="-100"))
    np.testing.assert_allclose(im.frame(0), px * 2.5 - 100)
    assert im.pixels.dtype == np.float32


def test_monochrome1_is_inverted(dicom_write):
    px = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    im = dicom.read(dicom_write("m1.dcm", px, PhotometricInterpretation="MONOCHROME1"))
    # value' = min + max - value: same range, order reversed
    np.testing.assert_array_equal(im.frame(0), [[300, 200], [100, 0]])
    assert im.invert and im.photometric == "MONOCHROME1"


def test_signed_8_and_12_bit(dicom_write):
    s = np.array([[-1000, -1], [0, 1200]], dtype=np.int16)
    np.testing.assert_array_equal(dicom.read(dicom_write("s.dcm", s)).frame(0), s)
    u8 = np.array([[0, 17], [128, 255]], dtype=np.uint8)
    im8 = dicom.read(dicom_write("u8.dcm", u8))
    assert im8.bits_allocated == 8
    np.testing.assert_array_equal(im8.frame(0), u8)
    # 12 bits stored in 16: the high nibble may hold overlay bits and must be ignored
    raw = np.array([[0x0FFF, 0xF123], [0x1001, 0x0800]], dtype=np.uint16)
    im12 = dicom.read(dicom_write("u12.dcm", raw, BitsStored=12, HighBit=11))
    np.testing.assert_array_equal(im12.frame(0), raw & 0x0FFF)
    # signed 12 bit: bit 11 is the sign
    s12 = np.array([[0x0FFF, 0x0800], [0x07FF, 0x0001]], dtype=np.uint16).view(np.int16)
    im = dicom.read(dicom_write("s12.dcm", s12, BitsStored=12, HighBit=11))
    np.testing.assert_array_equal(im.frame(0), [[-1, -2048], [2047, 1]])


def test_big_endian_and_implicit_vr(dicom_write):
    px = (np.arange(20, dtype=np.uint16) * 300).reshape(4, 5)
    for syntax in (ExplicitVRBigEndian, ImplicitVRLittleEndian):
        np.testing.assert_array_equal(dicom.read(dicom_write(f"{syntax}.dcm", px, syntax=syntax)).frame(0), px)


def test_no_preamble_no_file_meta_is_read_with_a_warning(dicom_write):
    px = np.arange(6, dtype=np.uint16).reshape(2, 3)
    path = dicom_write("raw.dcm", px, meta=False)
    assert path.read_bytes()[128:132] != b"DICM"
    im = dicom.read(path)
    np.testing.assert_array_equal(im.frame(0), px)
    assert "dicom_no_file_meta" in [code for code, _ in im.warnings]


def test_missing_or_invalid_pixel_spacing_falls_back_with_warning(dicom_write):
    px = np.ones((2, 2), dtype=np.uint16)
    for name, kw in (("nosp.dcm", {"PixelSpacing": None}), ("badsp.dcm", {"PixelSpacing": ["0", "-1"]})):
        im = dicom.read(dicom_write(name, px, **kw))
        assert im.pixel_spacing == (1.0, 1.0)
        assert [code for code, _ in im.warnings] == ["dicom_no_spacing"]
    im = dicom.read(dicom_write("sp.dcm", px))
    assert im.pixel_spacing == (0.8, 0.9) and im.warnings == ()


def test_non_dicom_empty_and_truncated_files(tmp_path, dicom_write):
    text = tmp_path / "notes.dcm"
    text.write_text("this is not an image\n1 2 3\n")
    binary = tmp_path / "noise.dcm"
    binary.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    garbage_vr = tmp_path / "garbage_vr.txt"  # forced read parses it lazily into an element of VR 'IC'
    garbage_vr.write_text("no DICOM here\n")
    for p in (text, binary, empty, garbage_vr):
        with pytest.raises(dicom.DicomError) as err:
            dicom.read(p)
        assert err.value.reason == "dicom_not_dicom", p
    good = dicom_write("cut.dcm", np.ones((16, 16), dtype=np.uint16))
    data = good.read_bytes()
    # cut in the pixel data, in the header, inside the file meta
    for n, reasons in (
        (len(data) - 100, {"dicom_truncated"}),
        (300, {"dicom_truncated"}),
        (140, {"dicom_truncated", "dicom_unreadable"}),
    ):
        cut = tmp_path / f"cut{n}.dcm"
        cut.write_bytes(data[:n])
        with pytest.raises(dicom.DicomError) as err:
            dicom.read(cut)
        assert err.value.reason in reasons
    with pytest.raises(dicom.DicomError) as err:
        dicom.read(tmp_path / "absent.dcm")
    assert err.value.reason == "dicom_unreadable"


def test_only_whitelisted_fields_leave_the_reader(dicom_write):
    names = {f.name for f in dataclasses.fields(dicom.DicomImage)}
    assert names == {
        "stored",
        "slope",
        "intercept",
        "invert",
        "pixel_spacing",
        "rows",
        "cols",
        "bits_allocated",
        "bits_stored",
        "signed",
        "photometric",
        "slice_location",
        "instance_number",
        "series_description",
        "warnings",
    }
    im = dicom.read(dicom_write("w.dcm", np.ones((3, 3), np.uint16), InstanceNumber=7, SliceLocation="3.25"))
    assert (im.instance_number, im.slice_location, im.rows, im.cols) == (7, 3.25, 3, 3)
    assert "Test" not in repr(dataclasses.replace(im, stored=np.zeros(1)))


def test_series_description_dropped_when_it_holds_an_identifying_value(dicom_write):
    px = np.ones((2, 2), np.uint16)
    ok = dicom.read(dicom_write("a.dcm", px, SeriesDescription="cine SAX"))
    assert ok.series_description == "cine SAX"
    for desc in ("SAX test^person", "cine TP-0001", "cine 20240131"):
        im = dicom.read(dicom_write("b.dcm", px, SeriesDescription=desc, StudyDate="20240131"))
        assert im.series_description is None, desc
    assert dicom.read(dicom_write("c.dcm", px, SeriesDescription="cine"), describe=False).series_description is None


def test_error_messages_carry_no_header_values(dicom_write):
    px = np.ones((4, 4), np.uint16)
    path = dicom_write("bad.dcm", px, PatientName="Secretname^Person", BitsAllocated=12)
    with pytest.raises(dicom.DicomError) as err:
        dicom.read(path)
    assert "Secretname" not in str(err.value)
    assert dicom.scrub("x Secretname y", ["Secretname"]) == "x [redacted] y"


def test_every_reason_is_documented():
    doc = (Path(__file__).parents[1] / "docs" / "qc.md").read_text()
    for code in dicom.REASONS:
        assert f"`{code}`" in doc
