# Container images of dagd and of the pipeline stack (docs/images.md). Included from the
# Makefile. `make images` builds them all; each image has its own target and stamp
# (build/images/<name>.stamp, holding the image id), so a second `make images` only
# checks. Downloads and the broker's cargo build are kept in $(DAGD_CACHE), shared by
# every clone on the machine.
#
# BASE is the Debian image every Dockerfile starts from. The default, dagd-base/debian:bookworm,
# is made here from Debian's archive (images/base/make-base.sh) so nothing is pulled;
# with a registry: make images BASE=debian:bookworm-slim
BASE          ?= dagd-base/debian:bookworm
DEFAULT_BASE  := dagd-base/debian:bookworm
DAGD_CACHE    ?= $(HOME)/.cache/dagd
IMAGE_TAG     ?= local
TANSU_VERSION := 0.6.0
PYSPARK_SPEC  := pyspark==3.5.*
IMG           := build/images
# images/measure.sh builds with DOCKER_NOCACHE=--no-cache DOCKER_QUIET= (every step's image in the stamp)
DOCKER_NOCACHE ?=
DOCKER_QUIET  ?= -q
DOCKER_BUILD  := DOCKER_BUILDKIT=0 docker build $(DOCKER_QUIET) --force-rm $(DOCKER_NOCACHE) --build-arg BASE=$(BASE)
PIP_WHEELS    := $(PYTHON) -m pip download -q --disable-pip-version-check --no-deps

IMAGE_NAMES   := dagd postgres broker spark producer loader docker-proxy
STACK_IMAGES  := dagd postgres broker producer loader docker-proxy

# Debian packages the images need on the host (not part of `make deps`: only these
# targets and the image tests need them): debootstrap for the base, docker-compose for the
# stack, pip for the wheel downloads.
IMAGE_DEB_PKGS := debootstrap docker-compose python3-pip

.PHONY: images images-stack images-base images-deps images-measure $(IMAGE_NAMES:%=image-%)
images: $(IMAGE_NAMES:%=image-%)
images-stack: $(STACK_IMAGES:%=image-%)
$(foreach n,$(IMAGE_NAMES),$(eval image-$(n): $(IMG)/$(n).stamp))

# Each image's size and build times, cold (no layer cache) and cached, written into
# docs/images.md (images/measure.sh). The downloads and the broker's cargo build are kept.
# MEASURE_IMAGES="dagd postgres" measures those only (the table keeps the other rows);
# MEASURE_COLD="dagd" narrows the cold builds ("" skips them; "base" is the debootstrap).
MEASURE_IMAGES ?= $(IMAGE_NAMES)
images-measure: $(MEASURE_IMAGES:%=image-%)
	MAKE="$(MAKE)" sh images/measure.sh docs/images.md $(MEASURE_IMAGES)

# The base image: checked (made when missing) before any image is built.
images-deps:
	@$(MAKE) -s --no-print-directory deps DEB_PKGS="$(IMAGE_DEB_PKGS)"

images-base: images-deps
	@if [ "$(BASE)" = "$(DEFAULT_BASE)" ]; then sh images/base/make-base.sh $(BASE); fi

# $(call build-image,NAME,CONTEXT): build dagd/NAME:$(IMAGE_TAG), its id in the stamp
define build-image
	@mkdir -p $(@D)
	@echo "image: dagd/$(1):$(IMAGE_TAG)"
	$(DOCKER_BUILD) -t dagd/$(1):$(IMAGE_TAG) -f images/$(1)/Dockerfile $(2) >$@.tmp
	@mv $@.tmp $@
endef

$(IMG)/dagd.stamp: images/dagd/Dockerfile images/dagd/collect.sh .dockerignore Makefile $(SRCS) src/main.c $(wildcard include/dagd/*.h src/*/*.h) | images-base
	$(call build-image,dagd,.)

$(IMG)/postgres.stamp: images/postgres/Dockerfile images/postgres/entrypoint.sh | images-base
	$(call build-image,postgres,images/postgres)

$(IMG)/docker-proxy.stamp: images/docker-proxy/Dockerfile | images-base
	$(call build-image,docker-proxy,images/docker-proxy)

$(IMG)/loader.stamp: images/loader/Dockerfile | images-base
	$(call build-image,loader,images/loader)

# The broker: tansu built by cargo on the host (crates.io), its binary copied in.
TANSU_BIN := $(DAGD_CACHE)/tansu/bin/tansu
$(TANSU_BIN):
	@echo "cargo: tansu $(TANSU_VERSION), once per machine (about 12 minutes on 2 idle cores)"
	CARGO_TARGET_DIR=$(DAGD_CACHE)/tansu-target cargo install -q tansu --version $(TANSU_VERSION) \
	    --locked --features dynostore --root $(DAGD_CACHE)/tansu

$(IMG)/broker.stamp: images/broker/Dockerfile $(TANSU_BIN) | images-base
	@rm -rf $(IMG)/ctx/broker && mkdir -p $(IMG)/ctx/broker
	cp $(TANSU_BIN) $(IMG)/ctx/broker/
	$(call build-image,broker,$(IMG)/ctx/broker)

# Python packages: downloaded on the host into wheelhouses, copied into the contexts.
$(DAGD_CACHE)/wheels/kafka/.done:
	@mkdir -p $(@D)
	$(PIP_WHEELS) --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 -d $(@D) kafka-python
	@touch $@
$(DAGD_CACHE)/wheels/spark/.done:
	@mkdir -p $(@D)
	$(PIP_WHEELS) -d $(@D) '$(PYSPARK_SPEC)' py4j
	@touch $@

$(IMG)/producer.stamp: images/producer/Dockerfile $(DAGD_CACHE)/wheels/kafka/.done | images-base
	@rm -rf $(IMG)/ctx/producer && mkdir -p $(IMG)/ctx/producer/wheels
	cp $(DAGD_CACHE)/wheels/kafka/*.whl $(IMG)/ctx/producer/wheels/
	$(call build-image,producer,$(IMG)/ctx/producer)

$(IMG)/spark.stamp: images/spark/Dockerfile $(DAGD_CACHE)/wheels/kafka/.done $(DAGD_CACHE)/wheels/spark/.done | images-base
	@rm -rf $(IMG)/ctx/spark && mkdir -p $(IMG)/ctx/spark/wheels
	cp $(DAGD_CACHE)/wheels/kafka/*.whl $(DAGD_CACHE)/wheels/spark/* $(IMG)/ctx/spark/wheels/
	$(call build-image,spark,$(IMG)/ctx/spark)
