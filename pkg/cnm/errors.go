package cnm

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Error codes of this project (see driverapi), for the core's callers.
const (
	CodeAddressInUse     = driverapi.CodeAddressInUse
	CodeEndpointInUse    = driverapi.CodeEndpointInUse
	CodePoolExhausted    = driverapi.CodePoolExhausted
	CodeInterfaceExists  = driverapi.CodeInterfaceExists
	CodePortInUse        = driverapi.CodePortInUse
	CodeReservationLimit = driverapi.CodeReservationLimit
)

// newError is a CNI error with a code and a message naming the field.
func newError(code uint, format string, a ...any) *types.Error {
	return &types.Error{Code: code, Msg: fmt.Sprintf(format, a...)}
}

func invalidConfig(format string, a ...any) *types.Error {
	return newError(types.ErrInvalidNetworkConfig, format, a...)
}

func invalidEnv(format string, a ...any) *types.Error {
	return newError(types.ErrInvalidEnvironmentVariables, format, a...)
}

// AsCNIError turns any error of the core into a CNI error with the code
// the spec (or this project) gives its cause.
func AsCNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		if err == error(te) {
			return te
		}
		// The context around te, with te's details kept apart once.
		msg := strings.TrimSuffix(err.Error(), "; "+te.Details)
		return &types.Error{Code: te.Code, Msg: msg, Details: te.Details}
	}
	code := types.ErrInternal
	switch {
	case errors.Is(err, store.ErrLocked), errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrConflict):
		code = types.ErrTryAgainLater
	case errors.Is(err, store.ErrCorrupt), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT),
		errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EIO):
		code = types.ErrIOFailure
	case errors.Is(err, ipam.ErrAddressInUse):
		code = CodeAddressInUse
	case errors.Is(err, ipam.ErrPoolExhausted):
		code = CodePoolExhausted
	case errors.Is(err, ipam.ErrAddressReserved), errors.Is(err, ipam.ErrOutsideRange), errors.Is(err, ipam.ErrRequestConflict),
		errors.Is(err, ipam.ErrPluginNotFound):
		code = types.ErrInvalidNetworkConfig
	case errors.Is(err, sandbox.ErrInterfaceExists):
		code = CodeInterfaceExists
	case errors.Is(err, sandbox.ErrNoSandbox):
		code = types.ErrInvalidNetNS
	}
	return &types.Error{Code: code, Msg: err.Error()}
}
