package e2e_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	. "github.com/onsi/gomega"
)

// ensurePauseImage returns the OCI image-layout tar of the pause image,
// built once per version of pause/main.go and kept in the cache.
func ensurePauseImage() string {
	src, err := os.ReadFile(filepath.Join(repoRoot, "test", "e2e", "pause", "main.go"))
	Expect(err).NotTo(HaveOccurred())
	key := sha256.Sum256(append(src, []byte(runtime.GOARCH+" "+pauseImage)...))
	path := filepath.Join(cacheDir, "pause-"+hex.EncodeToString(key[:6])+".tar")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	dir, err := os.MkdirTemp(runDir, "pause-")
	Expect(err).NotTo(HaveOccurred())
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "pause"), "./test/e2e/pause")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "building pause: %s", out)
	bin, err := os.ReadFile(filepath.Join(dir, "pause"))
	Expect(err).NotTo(HaveOccurred())
	layout, err := ociLayout(bin, pauseImage, runtime.GOARCH)
	Expect(err).NotTo(HaveOccurred())
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid()) // runs may race to fill the cache
	Expect(os.WriteFile(tmp, layout, 0o644)).To(Succeed())
	Expect(os.Rename(tmp, path)).To(Succeed())
	return path
}

// epoch is the time of every tar entry: the image is reproducible.
var epoch = time.Unix(0, 0)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// ociLayout packs a one-file image (/pause, its entrypoint) as an OCI
// image layout in a tar: oci-layout, index.json (naming the image for
// `ctr images import`) and the blobs of the gzipped layer, the config and
// the manifest.
func ociLayout(pause []byte, name, arch string) ([]byte, error) {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{
		Name: "pause", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(pause)),
		ModTime: epoch, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(pause); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(layer.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}

	blobs := map[string][]byte{}
	add := func(mediaType string, b []byte) descriptor {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return descriptor{MediaType: mediaType, Digest: d, Size: len(b)}
	}
	diffID := sha256.Sum256(layer.Bytes())
	layerDesc := add("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": arch,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": []string{"/pause"}, "WorkingDir": "/"},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	})
	if err != nil {
		return nil, err
	}
	configDesc := add("application/vnd.oci.image.config.v1+json", config)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configDesc,
		"layers":        []descriptor{layerDesc},
	})
	if err != nil {
		return nil, err
	}
	manifestDesc := add("application/vnd.oci.image.manifest.v1+json", manifest)
	manifestDesc.Platform = &platform{Architecture: arch, OS: "linux"}
	manifestDesc.Annotations = map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": tagOf(name),
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{manifestDesc},
	})
	if err != nil {
		return nil, err
	}

	var out bytes.Buffer
	ow := tar.NewWriter(&out)
	file := func(name string, b []byte) error {
		if err := ow.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := ow.Write(b)
		return err
	}
	dir := func(name string) error {
		return ow.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	if err := file("index.json", index); err != nil {
		return nil, err
	}
	if err := dir("blobs/"); err != nil {
		return nil, err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return nil, err
	}
	// In a fixed order: layer, config, manifest.
	for _, d := range []descriptor{layerDesc, configDesc, manifestDesc} {
		if err := file("blobs/sha256/"+d.Digest[len("sha256:"):], blobs[d.Digest]); err != nil {
			return nil, err
		}
	}
	if err := ow.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// tagOf returns the tag of an image reference ("1.0" of "a/b:1.0").
func tagOf(ref string) string {
	for i := len(ref) - 1; i >= 0 && ref[i] != '/'; i-- {
		if ref[i] == ':' {
			return ref[i+1:]
		}
	}
	return "latest"
}
